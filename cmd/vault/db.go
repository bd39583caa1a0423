package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/wormvault/wormvault/internal/store"
	"github.com/wormvault/wormvault/migrations"
)

// dbOptions bounds every wait of the server on its database (issue 14):
// one connection attempt, one statement, one lock wait, and how the start
// retries while the database is down or hung.
type dbOptions struct {
	MaxConns         int
	ConnectTimeout   time.Duration
	StatementTimeout time.Duration
	LockTimeout      time.Duration
	// RetryMin and RetryMax bound the backoff between start-up attempts.
	RetryMin, RetryMax time.Duration
}

// Start-up retry backoff: from one second, doubling, to thirty.
const (
	defaultRetryMin = time.Second
	defaultRetryMax = 30 * time.Second
)

// poolConfig parses url and applies o: pool size, connect timeout, and
// statement_timeout and lock_timeout as startup parameters, so that they
// hold on every connection the pool ever opens, including those it
// replaces after an outage. Both are settings any role may set (PGC_USERSET),
// so the least-privileged runtime login can; a setting in the URL wins.
func poolConfig(url string, o dbOptions) (*pgxpool.Config, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("database url: %w", err)
	}
	if o.MaxConns > 0 {
		cfg.MaxConns = int32(o.MaxConns)
	}
	cc := cfg.ConnConfig
	if o.ConnectTimeout > 0 && (cc.ConnectTimeout == 0 || cc.ConnectTimeout > o.ConnectTimeout) {
		cc.ConnectTimeout = o.ConnectTimeout
	}
	for name, d := range map[string]time.Duration{"statement_timeout": o.StatementTimeout, "lock_timeout": o.LockTimeout} {
		if _, set := cc.RuntimeParams[name]; !set && d > 0 {
			cc.RuntimeParams[name] = strconv.FormatInt(d.Milliseconds(), 10) // milliseconds, PostgreSQL's unit for both
		}
	}
	return cfg, nil
}

// openServeDB connects the server's pool. While the database refuses
// connections or accepts them and never answers, it logs one line per
// attempt and retries with backoff until ctx is done: the server starts as
// soon as the database returns, instead of hanging forever or exiting at
// once. Errors that retrying cannot fix (a malformed URL, a refused
// password, pending migrations) are returned at once.
func openServeDB(ctx context.Context, url string, o dbOptions, log *slog.Logger) (*pgxpool.Pool, error) {
	cfg, err := poolConfig(url, o)
	if err != nil {
		return nil, err
	}
	if o.RetryMin <= 0 {
		o.RetryMin = defaultRetryMin
	}
	if o.RetryMax < o.RetryMin {
		o.RetryMax = max(defaultRetryMax, o.RetryMin)
	}
	wait := o.RetryMin
	for attempt := 1; ; attempt++ {
		pool, err := connectOnce(ctx, cfg, log)
		if err == nil {
			if attempt > 1 {
				log.Info("database reachable", "attempt", attempt)
			}
			return pool, nil
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("database: %w", ctx.Err())
		}
		if !retryableConnect(err) {
			return nil, err
		}
		log.Warn("database unreachable; retrying", "attempt", attempt, "retry_in", wait,
			"connect_timeout", cfg.ConnConfig.ConnectTimeout, "err", err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("database: %w", ctx.Err())
		case <-t.C:
		}
		wait = min(2*wait, o.RetryMax)
	}
}

// errSchema marks a failed schema check: a connection that worked, so
// retrying would not help.
var errSchema = errors.New("database schema")

// connectOnce opens the pool and checks the schema on one connection.
func connectOnce(ctx context.Context, cfg *pgxpool.Config, log *slog.Logger) (*pgxpool.Pool, error) {
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("database: %w", err)
	}
	// The pool connects lazily: Acquire is the first real attempt, bounded
	// by the connect timeout whatever the server does.
	conn, err := pool.Acquire(ctx)
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("database: connect: %w", err)
	}
	err = migrations.Ensure(ctx, conn.Conn(), log)
	conn.Release()
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("%w: %w", errSchema, err)
	}
	return pool, nil
}

// retryableConnect reports whether a failed start-up connection may
// succeed later: the database is down, unreachable, hung or starting.
// An authentication failure or a schema problem is final.
func retryableConnect(err error) bool {
	if errors.Is(err, errSchema) {
		return false
	}
	return store.Unavailable(err)
}
