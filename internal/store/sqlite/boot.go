package sqlite

import (
	"context"
	"database/sql"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"strings"
)

// With synchronous=NORMAL a commit is in the OS's page cache, not yet on
// the disk, when its messages are acked: a crash of the process loses
// nothing (the kernel writes the cache out), but a crash of the machine
// (power, kernel panic, a VM killed) can lose the last acked commits.
// Their seqs would then be handed out again, to other messages, under the
// same epoch, and a client that had seen them would silently skip the new
// ones (SPEC §4 joined.epoch: the epoch changes when stored history was
// lost). So the store notices a machine stop and gives every room a new
// epoch:
//
//   - Open records, durably (one commit with synchronous=FULL), the
//     kernel's boot ID and the synchronous setting it runs with, and
//     removes the clean-stop marker;
//   - Close, once everything is committed, writes the marker back, durably;
//   - an Open that finds no marker (the last run did not Close), a run with
//     synchronous=NORMAL, and another boot ID (or none to compare) knows
//     that the machine went down while the file was open, with commits
//     perhaps only in a page cache that is gone. It rotates the epochs
//     before anything is read or written.
//
// A kill -9 or panic on the same boot keeps the epochs: its commits are in
// the page cache, which the kernel still writes out.

// Keys of meta rows that record how the file was last opened.
const (
	metaCleanStop = "clean_stop" // "1" while no Store has the file open since a clean Close
	metaBootID    = "boot_id"    // the boot ID of the machine when the file was last opened
	metaSync      = "sync"       // the synchronous setting it was last opened with
)

// bootIDPath holds the Linux kernel's boot ID: a random UUID drawn at each
// boot (random(4)).
const bootIDPath = "/proc/sys/kernel/random/boot_id"

// readBootID returns the kernel's boot ID, or "" where there is none to
// read (not Linux): then every unclean stop with synchronous=NORMAL is
// taken for a machine stop.
func readBootID() string {
	b, err := os.ReadFile(bootIDPath)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// lastRun is what meta says about the run that opened the file last.
type lastRun struct {
	clean  bool   // it closed the store (or no run of this version opened the file)
	bootID string // the boot it ran in; "" if unknown
	sync   string // its synchronous setting
}

// machineStopped reports whether the last run ended with the machine, not
// only the process, while commits of it may not have reached the disk.
func (l lastRun) machineStopped(bootID string) bool {
	return !l.clean && l.sync == "NORMAL" && (l.bootID == "" || bootID == "" || l.bootID != bootID)
}

// markOpen runs Open's check: it reads how the file was last opened and,
// if the machine stopped while a run with synchronous=NORMAL had it open,
// gives the store and every room a new epoch (rotated reports how many
// rooms). Then it records this run (bootID, sync) and removes the
// clean-stop marker. All of it is one transaction on db's one connection,
// committed with synchronous=FULL, so that it is on the disk before any
// message of this run is: a machine stop later in this run finds it.
func markOpen(ctx context.Context, db *sql.DB, bootID, sync string, random io.Reader) (last lastRun, rotated int64, err error) {
	c, err := db.Conn(ctx)
	if err != nil {
		return last, 0, err
	}
	defer c.Close()
	if _, err := c.ExecContext(ctx, "PRAGMA synchronous = FULL"); err != nil {
		return last, 0, err
	}
	defer c.ExecContext(context.Background(), "PRAGMA synchronous = "+sync)
	tx, err := c.BeginTx(ctx, nil) // BEGIN IMMEDIATE (see dsn)
	if err != nil {
		return last, 0, err
	}
	defer tx.Rollback()
	var clean, boot, was sql.NullString
	err = tx.QueryRowContext(ctx, `SELECT (SELECT value FROM meta WHERE key = ?1), (SELECT value FROM meta WHERE key = ?2), (SELECT value FROM meta WHERE key = ?3)`,
		metaCleanStop, metaBootID, metaSync).Scan(&clean, &boot, &was)
	if err != nil {
		return last, 0, err
	}
	// A file that no run of this version has opened (new, or from before
	// the marker) has none of the rows: nothing to go by, and nothing was
	// promised beyond a process crash.
	last = lastRun{clean: clean.String == "1" || !boot.Valid, bootID: boot.String, sync: was.String}
	if last.machineStopped(bootID) {
		epoch := make([]byte, 8)
		if _, err := io.ReadFull(random, epoch); err != nil {
			return last, 0, fmt.Errorf("new epoch: %w", err)
		}
		e := hex.EncodeToString(epoch)
		if _, err := tx.ExecContext(ctx, "UPDATE meta SET value = ? WHERE key = 'epoch'", e); err != nil {
			return last, 0, err
		}
		res, err := tx.ExecContext(ctx, "UPDATE rooms SET epoch = ?", e)
		if err != nil {
			return last, 0, err
		}
		if rotated, err = res.RowsAffected(); err != nil {
			return last, 0, err
		}
	}
	for _, kv := range [][2]string{{metaBootID, bootID}, {metaSync, sync}} {
		if _, err := tx.ExecContext(ctx, "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value", kv[0], kv[1]); err != nil {
			return last, 0, err
		}
	}
	if _, err := tx.ExecContext(ctx, "DELETE FROM meta WHERE key = ?", metaCleanStop); err != nil {
		return last, 0, err
	}
	return last, rotated, tx.Commit()
}

// markClean writes the clean-stop marker on c, the writer's connection,
// with synchronous=FULL: the commit that makes the WAL, and every commit
// before it, durable. Close calls it once everything queued is committed.
func markClean(ctx context.Context, c *sql.Conn) error {
	if _, err := c.ExecContext(ctx, "PRAGMA synchronous = FULL"); err != nil {
		return err
	}
	_, err := c.ExecContext(ctx, "INSERT INTO meta (key, value) VALUES (?, '1') ON CONFLICT (key) DO UPDATE SET value = excluded.value", metaCleanStop)
	return err
}
