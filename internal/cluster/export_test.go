package cluster

import (
	"context"
	"time"
)

// Position is position, for the external tests.
type Position struct {
	Epoch string
	Last  int64
	ID    string
	Head  int64
}

// PositionForTest runs a node's position check of room at seq at.
func PositionForTest(ctx context.Context, s *Store, room string, at int64) (Position, error) {
	ex := s.positionExec(room, false, at)
	p, err := parsePosition(positionScript.Exec(ctx, s.client, ex.Keys, ex.Args))
	return Position{p.epoch, p.last, p.id, p.head}, err
}

// PruneForTest runs the prune of key's ended restrictions of users, as a
// read at now would.
func PruneForTest(ctx context.Context, s *Store, key string, now time.Time, users ...string) {
	s.prune(ctx, key, now, users)
}
