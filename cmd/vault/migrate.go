package main

import (
	"context"
	"errors"
	"flag"
	"io"
)

func runMigrate(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	fs := flag.NewFlagSet("migrate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("database-url", getenv("VAULT_DATABASE_URL"), "PostgreSQL URL (VAULT_DATABASE_URL)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *url == "" {
		return errors.New("migrate: --database-url or VAULT_DATABASE_URL is required")
	}
	log := newLogger(stderr, "text", "info")
	pool, err := openDB(ctx, *url, 2, log)
	if err != nil {
		return err
	}
	pool.Close()
	log.Info("database is up to date")
	return nil
}
