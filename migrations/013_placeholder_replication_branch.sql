-- Placeholder on branch replication only: tern needs contiguous numbers and
-- this branch's migration is 016. The lead drops this file at merge (the
-- other branches' 013 takes its place).
SELECT 1;
