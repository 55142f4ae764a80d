package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// txStmts runs the writer's transactions on the connection the committer
// holds, as prepared BEGIN IMMEDIATE, COMMIT and ROLLBACK statements, so
// that a transaction costs three statement executions and nothing else.
// IMMEDIATE takes the write lock up front, so no statement in it has to
// upgrade a read lock, which can fail with SQLITE_BUSY regardless of
// busy_timeout.
type txStmts struct {
	begin, commit, rollback *sql.Stmt
}

func (t *txStmts) prepare(ctx context.Context, conn *sql.Conn) error {
	for _, p := range []struct {
		stmt **sql.Stmt
		sql  string
	}{{&t.begin, "BEGIN IMMEDIATE"}, {&t.commit, "COMMIT"}, {&t.rollback, "ROLLBACK"}} {
		var err error
		if *p.stmt, err = conn.PrepareContext(ctx, p.sql); err != nil {
			return fmt.Errorf("prepare %q: %w", p.sql, err)
		}
	}
	return nil
}

func (t *txStmts) close() error {
	var errs []error
	for _, st := range []*sql.Stmt{t.begin, t.commit, t.rollback} {
		if st != nil {
			errs = append(errs, st.Close())
		}
	}
	return errors.Join(errs...)
}

// run runs f in a transaction and commits it if f succeeds. If f or the
// COMMIT fails, the transaction is rolled back, so that the connection
// is out of it whatever happened: SQLite rolls back by itself after some
// errors (SQLITE_FULL, SQLITE_IOERR) and leaves the transaction open
// after others (SQLITE_BUSY, also from COMMIT), and the ROLLBACK of a
// transaction already gone fails harmlessly.
func (t *txStmts) run(f func() error) error {
	ctx := context.Background() // bounded by busy_timeout, not by a caller
	if _, err := t.begin.ExecContext(ctx); err != nil {
		return err
	}
	err := f()
	if err == nil {
		_, err = t.commit.ExecContext(ctx)
	}
	if err != nil {
		t.rollback.ExecContext(ctx) // fails if SQLite rolled back already: nothing else to do
	}
	return err
}
