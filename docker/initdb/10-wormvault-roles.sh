#!/bin/sh
# Run once by the postgres image on a new data volume
# (/docker-entrypoint-initdb.d): the vault's two database roles and its
# database. The vault never connects as the PostgreSQL superuser.
#
#   vault_owner        owns the database and the schema; `vault migrate`
#                      runs as it (the compose service "migrate"). Neither
#                      SUPERUSER nor CREATEROLE.
#   wormvault_runtime  NOLOGIN group role the migrations grant to.
#   vault_app          the server's login (the service "vault"), a member of
#                      wormvault_runtime; owns nothing.
#
# Passwords come from the secret files, passed to psql as variables so
# that they are quoted as literals.
set -eu
owner_pw=$(cat /run/secrets/db_owner_password)
runtime_pw=$(cat /run/secrets/db_runtime_password)
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
  -v owner_pw="$owner_pw" -v runtime_pw="$runtime_pw" <<'SQL'
CREATE ROLE vault_owner LOGIN NOSUPERUSER NOCREATEROLE NOCREATEDB PASSWORD :'owner_pw';
CREATE ROLE wormvault_runtime NOLOGIN;
CREATE ROLE vault_app LOGIN NOSUPERUSER NOCREATEROLE NOCREATEDB PASSWORD :'runtime_pw' IN ROLE wormvault_runtime;
CREATE DATABASE vault OWNER vault_owner;
SQL
