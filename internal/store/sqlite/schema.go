package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
)

// ErrNotRoomchat is returned (wrapped) by Open for a file that is not a
// roomchat database: not SQLite at all, an SQLite database of another
// application, or one written by a newer roomchat.
var ErrNotRoomchat = errors.New("not a roomchat database")

// applicationID marks the file as roomchat's in the SQLite header (PRAGMA
// application_id), so that `file` and other tools can tell, too. "RCHT".
const applicationID = 0x52434854

//go:embed migrations/*.sql
var migrationFiles embed.FS

// A migration brings the schema from version-1 to version. Its file is
// migrations/NNNN_name.sql with NNNN = version.
type migration struct {
	version int
	name    string
	sql     string
}

// loadMigrations returns the embedded migrations in order, checking that
// their versions are 1, 2, … without gap.
func loadMigrations() ([]migration, error) {
	names, err := fs.Glob(migrationFiles, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	var ms []migration
	for i, name := range names {
		base := path.Base(name)
		num, _, _ := strings.Cut(base, "_")
		v, err := strconv.Atoi(num)
		if err != nil || v != i+1 {
			return nil, fmt.Errorf("migration %s: want version %d first in its name", base, i+1)
		}
		b, err := migrationFiles.ReadFile(name)
		if err != nil {
			return nil, err
		}
		ms = append(ms, migration{version: v, name: base, sql: string(b)})
	}
	return ms, nil
}

// tokenKeySize is the length of the key that signs resume tokens: 32
// bytes, the size of the HMAC-SHA256 tag it makes (RFC 2104 asks for a
// key at least that long).
const tokenKeySize = 32

// migrate checks that db is an empty file or a roomchat database and brings
// its schema to the newest version, all in one write transaction, which
// also proves that the file is writable. A file without a token key gets
// one of tokenKeySize bytes read from random (crypto/rand in Open; SQLite's
// randomblob is a PRNG that is not meant for keys). It returns the version
// the file had before.
func migrate(ctx context.Context, db *sql.DB, nowMs int64, random io.Reader) (from int, err error) {
	ms, err := loadMigrations()
	if err != nil {
		return 0, err
	}
	tx, err := db.BeginTx(ctx, nil) // BEGIN IMMEDIATE (see dsn)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()

	version, err := identify(ctx, tx, len(ms))
	if err != nil {
		return 0, err
	}
	for _, m := range ms[version:] {
		if _, err := tx.ExecContext(ctx, m.sql); err != nil {
			return 0, fmt.Errorf("migration %s: %w", m.name, err)
		}
	}
	if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", len(ms))); err != nil {
		return 0, err
	}
	if err := ensureTokenKey(ctx, tx, random); err != nil {
		return 0, err
	}
	// Always write, so that a read-only file fails here, at Open, rather
	// than at the first Append.
	if _, err := tx.ExecContext(ctx, "INSERT INTO meta (key, value) VALUES ('opened_ms', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value", strconv.FormatInt(nowMs, 10)); err != nil {
		return 0, err
	}
	return version, tx.Commit()
}

// identify is migrate's check of the file: empty (it is then marked as
// roomchat's), or roomchat's with a schema no newer than newest. It
// returns the file's schema version.
func identify(ctx context.Context, tx *sql.Tx, newest int) (version int, err error) {
	var appID, objects int
	if err := tx.QueryRowContext(ctx, "PRAGMA application_id").Scan(&appID); err != nil {
		return 0, err
	}
	if err := tx.QueryRowContext(ctx, "PRAGMA user_version").Scan(&version); err != nil {
		return 0, err
	}
	if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM sqlite_schema").Scan(&objects); err != nil {
		return 0, err
	}
	switch {
	case appID == 0 && version == 0 && objects == 0:
		// A new or empty file: make it ours.
		if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA application_id = %d", applicationID)); err != nil {
			return 0, err
		}
	case appID != applicationID:
		return 0, fmt.Errorf("%w: SQLite file of another application (application_id %#x, %d schema objects)", ErrNotRoomchat, appID, objects)
	case version > newest:
		return 0, fmt.Errorf("%w: schema version %d is newer than this roomchat's %d", ErrNotRoomchat, version, newest)
	case version > 0:
		var app string
		err := tx.QueryRowContext(ctx, "SELECT value FROM meta WHERE key = 'application'").Scan(&app)
		if err != nil || app != "roomchat" {
			return 0, fmt.Errorf("%w: roomchat marker missing from table meta (%v)", ErrNotRoomchat, err)
		}
	}
	return version, nil
}

// ensureTokenKey gives the file a token key of tokenKeySize bytes read
// from random, unless it has one.
func ensureTokenKey(ctx context.Context, tx *sql.Tx, random io.Reader) error {
	var haveKey bool
	if err := tx.QueryRowContext(ctx, "SELECT EXISTS (SELECT 1 FROM meta WHERE key = 'token_key')").Scan(&haveKey); err != nil {
		return err
	}
	if !haveKey {
		key := make([]byte, tokenKeySize)
		if _, err := io.ReadFull(random, key); err != nil {
			return fmt.Errorf("token key: %w", err)
		}
		if _, err := tx.ExecContext(ctx, "INSERT INTO meta (key, value) VALUES ('token_key', ?)", hex.EncodeToString(key)); err != nil {
			return err
		}
	}
	return nil
}
