package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/puddle/v2"
)

// refusedConnect returns the error of a real connection attempt to a
// port nothing listens on.
func refusedConnect(t *testing.T) error {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = pgconn.Connect(ctx, "postgres://vault@"+addr+"/vault?sslmode=disable&connect_timeout=5")
	if err == nil {
		t.Fatal("connected to a closed port")
	}
	return err
}

// TestDBErrUnavailableOnlyForConnections: only a database that cannot be
// reached now is "unavailable, retry later"; anything else keeps its
// meaning (an integrity failure above all), so that it is answered 500 and
// alarms instead of being retried.
func TestDBErrUnavailableOnlyForConnections(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		err  error
		want error // the sentinel the translated error must carry; nil: none of ours
	}{
		{"refused connection", refusedConnect(t), ErrUnavailable},
		{"connection exception 08006", &pgconn.PgError{Code: "08006"}, ErrUnavailable},
		{"too many connections 53300", &pgconn.PgError{Code: "53300"}, ErrUnavailable},
		{"disk full 53100", &pgconn.PgError{Code: "53100"}, ErrUnavailable},
		{"admin shutdown 57P01", &pgconn.PgError{Code: "57P01"}, ErrUnavailable},
		{"crash shutdown 57P02", &pgconn.PgError{Code: "57P02"}, ErrUnavailable},
		{"cannot connect now 57P03", &pgconn.PgError{Code: "57P03"}, ErrUnavailable},
		{"closed pool", fmt.Errorf("acquire: %w", puddle.ErrClosedPool), ErrUnavailable},
		{"closed connection", fmt.Errorf("query: %w", pgconn.ErrConnClosed), ErrUnavailable},
		{"pool deadline", fmt.Errorf("acquire: %w", context.DeadlineExceeded), ErrUnavailable},
		{"connection reset", &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}, ErrUnavailable},
		{"socket closed mid-reply", fmt.Errorf("receive message: %w", io.ErrUnexpectedEOF), ErrUnavailable},
		{"statement timeout 57014", &pgconn.PgError{Code: "57014"}, ErrUnavailable},
		{"lock timeout 55P03", &pgconn.PgError{Code: "55P03"}, ErrUnavailable},

		// The journal's append fails inside the transaction when the data
		// directory is full: 507 "insufficient storage", not "index
		// unavailable" (a syscall.Errno passes for a net.Error).
		{"journal append on a full disk", fmt.Errorf("audit: journal: journal: append: %w",
			&os.PathError{Op: "write", Path: "/data/journal/1.wvj", Err: syscall.ENOSPC}), syscall.ENOSPC},
		{"quota reached", &os.PathError{Op: "write", Path: "/data/x", Err: syscall.EDQUOT}, syscall.EDQUOT},
		// A failed fsync of the journal is the disk's fault: a 500 and an
		// operator's problem, never "unavailable, retry later".
		{"journal fsync I/O error", fmt.Errorf("audit: journal: %w",
			&os.PathError{Op: "fdatasync", Path: "/data/journal/1.wvj", Err: syscall.EIO}), nil},
		{"missing tree hash", fmt.Errorf("audit: %w: stored hash 6 is missing", ErrAuditTree), ErrAuditTree},
		{"broken chain", fmt.Errorf("%w: gap before entry 3", ErrAuditChainBroken), ErrAuditChainBroken},
		{"rollback", fmt.Errorf("%w: 3 entries, signed 5", ErrRollback), ErrRollback},
		{"no rows", pgx.ErrNoRows, ErrNotFound},
		{"unique violation", &pgconn.PgError{Code: "23505"}, ErrConflict},
		{"undefined table 42P01", &pgconn.PgError{Code: "42P01"}, nil},
		{"database dropped 57P04", &pgconn.PgError{Code: "57P04"}, nil},
		{"check violation 23514", &pgconn.PgError{Code: "23514"}, nil},
		{"scan into the wrong type", errors.New("can't scan into dest[0]: cannot scan text into *int64"), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := dbErr("op", tt.err)
			if !errors.Is(got, tt.err) && !errors.Is(got, tt.want) {
				t.Errorf("dbErr(%v) = %v: lost the cause", tt.err, got)
			}
			if tt.want != nil && !errors.Is(got, tt.want) {
				t.Errorf("dbErr(%v) = %v, want it to wrap %v", tt.err, got, tt.want)
			}
			if tt.want != ErrUnavailable && errors.Is(got, ErrUnavailable) {
				t.Errorf("dbErr(%v) = %v: unavailable (retry later), want an internal failure", tt.err, got)
			}
		})
	}
	if got := dbErr("op", context.Canceled); !errors.Is(got, context.Canceled) || errors.Is(got, ErrUnavailable) {
		t.Errorf("dbErr(context.Canceled) = %v, want the cancellation, not unavailable", got)
	}
}
