package server_test

import (
	"context"
	"database/sql"
	"net/http"
	"testing"
	"time"

	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/store/sqlite"
)

// dataVersion returns SQLite's data_version as seen by conn, another
// connection to the file: it changes whenever a change to the file has been
// committed through any other connection, the store's included.
func dataVersion(t *testing.T, conn *sql.Conn) int64 {
	t.Helper()
	var v int64
	if err := conn.QueryRowContext(context.Background(), "PRAGMA data_version").Scan(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

func rawConn(t *testing.T, path string) *sql.Conn {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(100)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	conn, err := db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// TestReadyzDoesNotWrite: /readyz is public, so asking it must not make the
// server write. 500 requests within the store's ReadyInterval leave the
// database file unchanged.
func TestReadyzDoesNotWrite(t *testing.T) {
	path := dbPath(t)
	ts, _ := newSQLiteServer(t, path, sqlite.Options{ReadyInterval: time.Hour})
	conn := rawConn(t, path)
	v := dataVersion(t, conn)
	for i := range 500 {
		if r := doHTTP(t, http.MethodGet, ts.URL+"/readyz", "", nil); r.status != http.StatusOK {
			t.Fatalf("/readyz %d: %d %s", i, r.status, r.body)
		}
	}
	if got := dataVersion(t, conn); got != v {
		t.Fatalf("500 /readyz requests changed the database (data_version %d → %d), want no write", v, got)
	}
}

// TestReadyzFollowsStore: with nothing written, another connection takes
// SQLite's write lock (a backup, an sqlite3 shell); /readyz turns 503
// store_unavailable once its last answer is older than ReadyInterval (the
// probe then waits BusyTimeout), and 200 again within ReadyInterval/5 of
// the lock's release.
func TestReadyzFollowsStore(t *testing.T) {
	const interval, busy = 500 * time.Millisecond, 50 * time.Millisecond
	path := dbPath(t)
	ts, _ := newSQLiteServer(t, path, sqlite.Options{ReadyInterval: interval, BusyTimeout: busy})
	ready := func() httpResult { return doHTTP(t, http.MethodGet, ts.URL+"/readyz", "", nil) }
	until := func(status int, within time.Duration) time.Duration {
		t.Helper()
		start := time.Now()
		for {
			r := ready()
			if r.status == status {
				if status != http.StatusOK {
					wantHTTPError(t, r, status, protocol.CodeStoreUnavailable)
				}
				return time.Since(start)
			}
			if time.Since(start) > within {
				t.Fatalf("/readyz still %d %s after %v, want %d", r.status, r.body, within, status)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	until(http.StatusOK, 0)

	conn := rawConn(t, path)
	ctx := context.Background()
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		t.Fatal(err)
	}
	locked := true
	defer func() {
		if locked {
			conn.ExecContext(ctx, "ROLLBACK")
		}
	}()
	// Slack for a loaded machine; the bound proper is interval + busy.
	d := until(http.StatusServiceUnavailable, interval+busy+2*time.Second)
	t.Logf("/readyz turned 503 %v after the lock was taken (ReadyInterval %v, BusyTimeout %v)", d, interval, busy)
	if _, err := conn.ExecContext(ctx, "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	locked = false
	d = until(http.StatusOK, interval/5+2*time.Second)
	t.Logf("/readyz turned 200 %v after the lock was released (ReadyInterval/5 = %v)", d, interval/5)
}
