package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"strings"
)

// multiSizes are the row counts multiStmt is prepared for. A batch of n rows
// takes about n/64 + 6 statements instead of n: per-statement overhead
// (database/sql, binding, stepping) is most of an insert's cost, so this
// roughly doubles what one commit can write per second. 64 rows of 7
// columns stay far below SQLite's limit of 32,766 parameters.
var multiSizes = []int{64, 16, 4, 1}

// multiStmt is one statement prepared for each of multiSizes rows: an INSERT
// with that many value tuples, or a query with that many IN parameters.
type multiStmt struct {
	cols  int
	stmts []*sql.Stmt // parallel to multiSizes
}

// prepareMulti prepares head + the tuples + tail for each size. With
// in = true the tuples are "?, ?, …" (for IN (…)); else "(?, …), (?, …)".
func prepareMulti(ctx context.Context, conn *sql.Conn, head string, cols int, tail string, in bool) (*multiStmt, error) {
	m := &multiStmt{cols: cols}
	tuple := "(" + strings.TrimSuffix(strings.Repeat("?, ", cols), ", ") + ")"
	if in {
		tuple = "?"
	}
	for _, n := range multiSizes {
		q := head + strings.TrimSuffix(strings.Repeat(tuple+", ", n), ", ") + tail
		st, err := conn.PrepareContext(ctx, q)
		if err != nil {
			m.close()
			return nil, err
		}
		m.stmts = append(m.stmts, st)
	}
	return m, nil
}

func (m *multiStmt) close() error {
	if m == nil {
		return nil
	}
	var errs []error
	for _, st := range m.stmts {
		errs = append(errs, st.Close())
	}
	return errors.Join(errs...)
}

// exec runs the statements for args, which is whole rows.
func (m *multiStmt) exec(ctx context.Context, args []any) error {
	return m.each(args, func(st *sql.Stmt, chunk []any) error {
		_, err := st.ExecContext(ctx, chunk...)
		return err
	})
}

// each calls f with the statement for the next chunk of args (whole rows),
// largest chunks first, until args is used up.
func (m *multiStmt) each(args []any, f func(st *sql.Stmt, chunk []any) error) error {
	for len(args) > 0 {
		rows := len(args) / m.cols
		for i, n := range multiSizes {
			if n <= rows {
				if err := f(m.stmts[i], args[:n*m.cols]); err != nil {
					return err
				}
				args = args[n*m.cols:]
				break
			}
		}
	}
	return nil
}
