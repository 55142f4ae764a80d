package sqlite

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	_ "modernc.org/sqlite" // registers driver "sqlite"

	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/store"
)

// Options configures a Store. The zero value of every field is a documented
// default, so Options{} is a good configuration.
type Options struct {
	// Retention bounds what is kept (store.Retention's defaults apply: 10,000
	// messages per room, no age limit). Reads honour it at once; rows are
	// deleted from the file in the background, within about TrimInterval.
	Retention store.Retention

	// MaxBatch is the most Appends committed in one transaction; 0 means
	// 4096. Larger batches amortise the commit's fsync over more messages;
	// past a few thousand they only add latency.
	MaxBatch int

	// MaxWait is how long the committer, having taken the first queued
	// Append, waits for more before it commits a batch smaller than
	// MaxBatch. 0 means no wait: a batch is what queued up while the
	// previous commit ran, which batches well under load and adds no
	// latency when idle.
	MaxWait time.Duration

	// QueueSize bounds the Appends waiting for the committer; 0 means
	// 65,536 (about 1.3 s of the measured peak rate). When the queue is full,
	// Append fails at once with store.ErrUnavailable instead of blocking.
	QueueSize int

	// BusyTimeout is how long a statement waits for a lock held by another
	// connection (another process, a backup) before failing; 0 means 5 s.
	BusyTimeout time.Duration

	// ReadConns is the number of connections for Messages and Room; 0 means
	// 4. Reads in WAL mode never wait for the writer.
	ReadConns int

	// Synchronous is SQLite's synchronous setting for the writer, "FULL"
	// (the default: fsync at every commit, so an acked message survives
	// power loss) or "NORMAL" (fsync only at checkpoints: survives kill -9
	// of the process, not power loss; about 30% more messages per second).
	// See docs/storage.md.
	Synchronous string

	// TrimInterval is how often retention and the sweep of expired
	// de-duplication keys run; 0 means 1 s.
	TrimInterval time.Duration

	// ReadyInterval is how long Ready answers from the outcome of the
	// store's last write before it probes again; 0 means 5 s. A failure is
	// answered for a fifth of it (1 s), so that recovery shows soon. It is
	// the most stale Ready's answer gets and bounds how often Ready writes:
	// see Ready.
	ReadyInterval time.Duration

	// Logger receives the store's own lines: a background checkpoint or
	// trim that starts failing and that works again. nil means
	// slog.Default().
	Logger *slog.Logger

	// now is the clock, for tests; nil means time.Now.
	now func() time.Time
	// rand is where a new file's token key and a new epoch come from, for
	// tests; nil means crypto/rand.
	rand io.Reader
	// bootID returns the kernel's boot ID, for tests; nil means
	// readBootID.
	bootID func() string
	// cacheRooms bounds the committer's room cache and the trimmer's set
	// of rooms to visit; 0 means maxCachedRooms. Tests lower it.
	cacheRooms int
}

func (o Options) withDefaults() Options {
	if o.MaxBatch <= 0 {
		o.MaxBatch = 4096
	}
	if o.QueueSize <= 0 {
		o.QueueSize = 65536
	}
	if o.BusyTimeout <= 0 {
		o.BusyTimeout = 5 * time.Second
	}
	if o.ReadConns <= 0 {
		o.ReadConns = 4
	}
	if o.TrimInterval <= 0 {
		o.TrimInterval = time.Second
	}
	if o.ReadyInterval <= 0 {
		o.ReadyInterval = 5 * time.Second
	}
	if o.Synchronous == "" {
		o.Synchronous = "FULL"
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.now == nil {
		o.now = time.Now
	}
	if o.rand == nil {
		o.rand = rand.Reader
	}
	if o.bootID == nil {
		o.bootID = readBootID
	}
	if o.cacheRooms <= 0 {
		o.cacheRooms = maxCachedRooms
	}
	return o
}

// Store is a store.Store kept in an SQLite file. Its methods are safe for
// concurrent use. It owns two goroutines, the committer (all writes) and
// the checkpointer, both started by Open and ended by Close, and three
// connection pools to the file (writer, checkpointer, readers), closed by
// Close.
type Store struct {
	path string
	opts Options
	lock *fileLock // held from Open until Close has closed the database

	epoch string // the store's epoch (meta 'epoch'); read by Open
	key   []byte // TokenKey (meta 'token_key'); read by Open

	wdb   *sql.DB   // one connection: wconn, once Open has migrated the file
	wconn *sql.Conn // held by the committer from Open until Close
	rdb   *sql.DB   // read-only pool for Messages, Room and Ready

	readAsc, readDesc, roomInfo, readyRead *sql.Stmt // on rdb
	restrictions, restricted, postRule     *sql.Stmt // on rdb (moderation.go)

	mu     sync.RWMutex // guards closed and sends on queue (so Close can close it)
	closed bool
	queue  chan request // closed by Close; drained by the committer

	health health // what Ready reports

	ckdb            *sql.DB        // one connection, for checkpointLoop
	stopCheckpoints chan struct{}  // closed by Close to end checkpointLoop
	wg              sync.WaitGroup // the committer and checkpointLoop

	exited    chan struct{} // closed when the committer returns
	closeOnce sync.Once
	closeErr  error

	c     committer  // owned by the committer goroutine
	cache cacheStats // sizes of the committer's caches
}

var _ store.Store = (*Store)(nil)

// sqliteMagic starts every SQLite database file.
var sqliteMagic = []byte("SQLite format 3\x00")

// Open opens the roomchat database at path, creating the file (and its
// directory) if missing, and migrates its schema to this version. It
// takes an exclusive lock on the database (the file path+"-lock"), held
// until Close, and fails at once with ErrLocked if another Store, in this
// process or another, holds it. It also fails, with an error naming path,
// when the file cannot be opened or written (permissions, read-only file
// system), is corrupt, or is not a roomchat database (ErrNotRoomchat), and
// when the lock file is a symbolic link. ctx bounds the opening only. The
// caller must Close the Store.
//
// The database holds every room's history and the key that signs resume
// tokens, so its files are private to the user that runs roomchat,
// whatever the umask: a directory Open creates is 0700, and the database,
// its -wal, -shm and -lock files are 0600 (a new database file is created
// so before SQLite opens it; existing ones that other users may read are
// narrowed to their owner's bits, with a warning when that fails).
func Open(ctx context.Context, path string, opts Options) (*Store, error) {
	s, err := open(ctx, path, opts)
	if err != nil {
		return nil, fmt.Errorf("open store %q: %w", path, err)
	}
	return s, nil
}

// open is Open without the path in its errors: it checks the options and
// the file, takes the lock, and opens the writer, the readers and the
// checkpointer in that order, closing what it opened if a step fails.
// The sequence stays in one function because its order is the point:
// the lock before the file check, the file made private before SQLite
// opens it, the writer (which migrates) before the readers.
func open(ctx context.Context, path string, opts Options) (*Store, error) {
	opts = opts.withDefaults()
	switch opts.Synchronous = strings.ToUpper(opts.Synchronous); opts.Synchronous {
	case "FULL", "NORMAL":
	default:
		return nil, fmt.Errorf("synchronous %q: want FULL or NORMAL", opts.Synchronous)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(abs), 0o700); err != nil {
		return nil, err
	}
	real, err := resolve(abs)
	if err != nil {
		return nil, err
	}
	// The lock comes first: checkFile opens the database, and closing that
	// descriptor would drop the POSIX locks of a Store that has it open in
	// this process (see fileLock).
	lock, err := lockDB(real)
	if err != nil {
		return nil, err
	}
	s := &Store{
		path:   abs,
		opts:   opts,
		lock:   lock,
		queue:  make(chan request, opts.QueueSize),
		exited: make(chan struct{}),
	}
	ok := false
	defer func() {
		if !ok {
			s.closeDBs()
			s.lock.release(true)
		}
	}()
	if err := checkFile(abs); err != nil {
		return nil, err
	}
	if err := createPrivate(real); err != nil {
		return nil, err
	}
	if err := s.openWriter(ctx, real); err != nil {
		return nil, err
	}
	if err := s.openReaders(ctx); err != nil {
		return nil, err
	}
	s.ckdb, err = sql.Open("sqlite", dsn(abs, opts.BusyTimeout, "_pragma=synchronous("+opts.Synchronous+")"))
	if err != nil {
		return nil, err
	}
	s.ckdb.SetMaxOpenConns(1)
	if err := s.c.init(ctx, s); err != nil {
		return nil, err
	}
	ok = true
	s.health.at = opts.now() // migrate committed a write
	s.stopCheckpoints = make(chan struct{})
	s.wg.Go(s.c.run)
	s.wg.Go(s.checkpointLoop)
	return s, nil
}

// openWriter is open's writer step: it opens the one write connection,
// migrates the schema, makes the files private, records the start and
// reads the store's identity (epoch, token key). real is the database's
// path with links resolved.
func (s *Store) openWriter(ctx context.Context, real string) error {
	opts := s.opts
	// The writer: one connection, every transaction BEGIN IMMEDIATE so
	// that it takes the write lock up front (no deadlock-prone upgrade).
	// synchronous=FULL fsyncs the WAL at every commit: see docs/storage.md.
	// Automatic checkpoints are off on this connection, so that copying the
	// WAL into the database (and its fsync) is never on the commit path:
	// the checkpointer goroutine does it. temp_store=MEMORY keeps the
	// statement journal of multi-row INSERTs off the disk. secure_delete
	// overwrites what a redaction (SPEC §11: the text is gone from the
	// store, not hidden), a clear or retention removes, so that it cannot
	// be read back from the file's free space.
	var err error
	s.wdb, err = sql.Open("sqlite", dsn(s.path, opts.BusyTimeout,
		"_txlock=immediate&_pragma=synchronous("+opts.Synchronous+")&_pragma=temp_store(MEMORY)&_pragma=wal_autocheckpoint(0)&_pragma=secure_delete(ON)"))
	if err != nil {
		return err
	}
	s.wdb.SetMaxOpenConns(1)
	s.wdb.SetMaxIdleConns(1)
	s.wdb.SetConnMaxLifetime(0)
	if _, err := migrate(ctx, s.wdb, opts.now().UnixMilli(), opts.rand); err != nil {
		return err
	}
	// The file is roomchat's: make it, and the -wal and -shm that SQLite
	// has made beside it, private if they were not (a file from before
	// this rule, or one copied in by hand).
	if err := narrowModes(real, real+"-wal", real+"-shm"); err != nil {
		opts.Logger.Warn("store: the database files are readable by other users and could not be made private; chmod them 0600", "path", real, "err", err)
	}
	// Before the identity is read: a machine stop during the last run
	// gives the file a new epoch (boot.go).
	boot := opts.bootID()
	last, rotated, err := markOpen(ctx, s.wdb, boot, opts.Synchronous, opts.rand)
	if err != nil {
		return fmt.Errorf("record the start: %w", err)
	}
	if last.machineStopped(boot) {
		opts.Logger.Warn("store: the machine stopped while the database was open with synchronous=NORMAL, so the last acked messages may be lost; every room starts a new epoch and clients start its history over",
			"path", s.path, "rooms", rotated, "last_boot_id", last.bootID)
	}
	if err := s.readIdentity(ctx); err != nil {
		return err
	}
	if s.wconn, err = s.wdb.Conn(ctx); err != nil {
		return err
	}
	return nil
}

// readIdentity reads the store's epoch and token key from meta on the
// writer, and checks that the database is in WAL mode.
func (s *Store) readIdentity(ctx context.Context) error {
	var keyHex string
	if err := s.wdb.QueryRowContext(ctx, "SELECT (SELECT value FROM meta WHERE key = 'epoch'), (SELECT value FROM meta WHERE key = 'token_key')").Scan(&s.epoch, &keyHex); err != nil {
		return fmt.Errorf("read identity: %w", err)
	}
	var err error
	if s.key, err = hex.DecodeString(keyHex); err != nil || len(s.key) < tokenKeySize || s.epoch == "" {
		return fmt.Errorf("%w: meta holds no valid epoch or token key", ErrNotRoomchat)
	}
	var mode string
	if err := s.wdb.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		return err
	}
	if !strings.EqualFold(mode, "wal") {
		return fmt.Errorf("journal mode is %q, want wal", mode)
	}
	return nil
}

// openReaders is open's reader step: the read-only connections and the
// statements prepared on them.
func (s *Store) openReaders(ctx context.Context) error {
	opts := s.opts
	var err error
	s.rdb, err = sql.Open("sqlite", dsn(s.path, opts.BusyTimeout, "_pragma=query_only(1)"))
	if err != nil {
		return err
	}
	s.rdb.SetMaxOpenConns(opts.ReadConns)
	s.rdb.SetMaxIdleConns(opts.ReadConns)
	for _, p := range []struct {
		stmt **sql.Stmt
		sql  string
	}{
		{&s.readAsc, readSQL("ASC")},
		{&s.readDesc, readSQL("DESC")},
		{&s.roomInfo, roomInfoSQL},
		{&s.readyRead, "SELECT value FROM meta WHERE key = 'application'"},
		{&s.restrictions, restrictionsSQL},
		{&s.restricted, restrictedSQL},
		{&s.postRule, postRuleSQL},
	} {
		if *p.stmt, err = s.rdb.PrepareContext(ctx, p.sql); err != nil {
			return fmt.Errorf("prepare %q: %w", p.sql, err)
		}
	}
	return nil
}

// checkpointInterval is how often checkpointLoop copies the WAL into the
// database. At the measured peak (about 60,000 messages/s, some 25 MB/s of
// WAL) half a second keeps the WAL around 12 MB.
const checkpointInterval = 500 * time.Millisecond

// checkpointLoop runs PASSIVE checkpoints on its own connection until Close:
// they copy committed WAL frames into the database file without taking the
// write lock, so commits go on meanwhile, and once a checkpoint has copied
// everything the writer starts the WAL over from its beginning. A failed
// checkpoint (a full disk: the database file cannot grow) is retried at the
// next tick and loses nothing; it is logged when it starts failing and when
// it works again.
func (s *Store) checkpointLoop() {
	t := time.NewTicker(checkpointInterval)
	defer t.Stop()
	fl := faultLog{log: s.opts.Logger, what: "checkpoint", path: s.path}
	for {
		select {
		case <-s.stopCheckpoints:
			return
		case <-t.C:
		}
		_, err := s.ckdb.Exec("PRAGMA wal_checkpoint(PASSIVE)")
		fl.observe(err)
	}
}

// retention returns room roomID's retention: the most messages kept and
// the oldest ts (Unix ms) kept.
func (s *Store) retention(roomID string) (limit int, cutoff int64) {
	limit, age := s.opts.Retention.For(roomID)
	if age <= 0 {
		return limit, math.MinInt64
	}
	return limit, s.opts.now().Add(-age).UnixMilli()
}

func unavailable(err error) error {
	return fmt.Errorf("%w: %w", store.ErrUnavailable, err)
}

func (s *Store) isClosed() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.closed
}

// Append implements store.Store. It queues m for the committer and returns
// without waiting for I/O; done is called from the committer goroutine
// after the batch holding m commits or fails. If the store is closed or
// its queue is full (the disk cannot keep up), done is called before
// Append returns, with an error wrapping store.ErrUnavailable.
func (s *Store) Append(m protocol.Message, key string, done store.DoneFunc) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		done(m, false, unavailable(store.ErrClosed))
		return
	}
	select {
	case s.queue <- request{msg: m, key: key, done: done}:
	default:
		done(m, false, unavailable(errors.New("append queue full")))
	}
}

// Clear implements store.Store: the committer deletes the room's messages
// in the transaction of the batch it is collected into, after the batch's
// earlier messages and before its later ones.
func (s *Store) Clear(ctx context.Context, roomID string) error {
	done := make(chan error, 1)
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return unavailable(store.ErrClosed)
	}
	select {
	case s.queue <- request{clear: roomID, cleared: done}:
	case <-ctx.Done():
		s.mu.RUnlock()
		return ctx.Err()
	}
	s.mu.RUnlock()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// TokenKey implements store.Store.
func (s *Store) TokenKey() []byte { return s.key }

// Flush implements store.Store: it queues a marker behind every pending
// Append and waits for the committer to reach it.
func (s *Store) Flush(ctx context.Context) error {
	done := make(chan struct{})
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return nil // Close has already waited for every Append
	}
	select {
	case s.queue <- request{flush: done}:
	case <-ctx.Done():
		s.mu.RUnlock()
		return ctx.Err()
	}
	s.mu.RUnlock()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close stops accepting Appends (later ones fail with store.ErrClosed),
// waits for the committer to commit everything already queued and call
// its done functions, then checkpoints the WAL into the database file,
// closes it and releases the lock that Open took. It blocks for as long as those commits take (each bounded by
// BusyTimeout when the file is locked). Calling Close again returns the
// first call's result.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		close(s.queue)
		s.mu.Unlock()
		<-s.exited
		close(s.stopCheckpoints)
		s.wg.Wait()
		var errs []error
		// Everything queued is committed: mark the stop clean. Failing
		// to only costs a new epoch if the machine stops before the
		// next Open (boot.go), so it is logged, not returned.
		if err := markClean(context.Background(), s.wconn); err != nil {
			s.opts.Logger.Warn("store: could not mark the stop clean; if the machine stops before the next start, every room gets a new epoch", "path", s.path, "err", err)
		}
		if _, err := s.wconn.ExecContext(context.Background(), "PRAGMA wal_checkpoint(TRUNCATE)"); err != nil {
			errs = append(errs, fmt.Errorf("checkpoint: %w", err))
		}
		errs = append(errs, s.closeDBs(), s.lock.release(false))
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}

// closeDBs closes the statements, the writer's connection and the pools,
// whichever are open.
func (s *Store) closeDBs() error {
	var errs []error
	for _, st := range []*sql.Stmt{s.readAsc, s.readDesc, s.roomInfo, s.readyRead, s.restrictions, s.restricted, s.postRule} {
		if st != nil {
			errs = append(errs, st.Close())
		}
	}
	errs = append(errs, s.c.closeStmts())
	if s.wconn != nil {
		errs = append(errs, s.wconn.Close())
	}
	for _, db := range []*sql.DB{s.rdb, s.ckdb, s.wdb} {
		if db != nil {
			errs = append(errs, db.Close())
		}
	}
	return errors.Join(errs...)
}
