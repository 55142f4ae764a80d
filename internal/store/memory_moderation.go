package store

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/roomchat/roomchat/internal/protocol"
)

var _ Moderation = (*Memory)(nil)

// restrictionKey names one user's restriction of one kind in one room.
type restrictionKey struct {
	room, user string
	kind       Kind
}

// muted returns the error for a message of userID in roomID at now, nil
// if the user is not muted there. Guarded by s.mu.
func (s *Memory) muted(roomID, userID string, now time.Time) error {
	if userID == "" || len(s.restrictions) == 0 {
		return nil
	}
	if r, ok := s.restrictions[restrictionKey{roomID, userID, Mute}]; ok && r.InForce(now) {
		return &MutedError{Until: r.Until}
	}
	return nil
}

// refused returns the error for m, a message (not a redaction) appended
// at now, nil if the room takes it: a mute of its sender, or the room's
// post rule when the sender is below moderator (below: m's
// BelowModerator, which Append has cleared). Guarded by s.mu.
func (s *Memory) refused(m protocol.Message, below bool, now time.Time) error {
	if err := s.muted(m.RoomID, m.From.UserID, now); err != nil {
		return err
	}
	if below && s.postRules[m.RoomID] == ModeratorsOnly {
		return &PostRuleError{Rule: ModeratorsOnly}
	}
	return nil
}

func (s *Memory) checkOpen() error {
	if s.closed {
		return fmt.Errorf("%w: %w", ErrUnavailable, ErrClosed)
	}
	return nil
}

// PutRestriction implements Moderation.
func (s *Memory) PutRestriction(_ context.Context, roomID string, kind Kind, r Restriction) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.checkOpen(); err != nil {
		return err
	}
	if s.restrictions == nil {
		s.restrictions = make(map[restrictionKey]Restriction)
	}
	s.restrictions[restrictionKey{roomID, r.UserID, kind}] = r
	return nil
}

// DeleteRestriction implements Moderation.
func (s *Memory) DeleteRestriction(_ context.Context, roomID string, kind Kind, userID string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.checkOpen(); err != nil {
		return false, err
	}
	k := restrictionKey{roomID, userID, kind}
	_, ok := s.restrictions[k]
	delete(s.restrictions, k)
	return ok, nil
}

// Restrictions implements Moderation. It visits every restriction of the
// store: memory is for tests and trials.
func (s *Memory) Restrictions(_ context.Context, roomID string, kind Kind, now time.Time) ([]Restriction, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	var out []Restriction
	for k, r := range s.restrictions {
		if k.room != roomID || k.kind != kind {
			continue
		}
		if r.InForce(now) {
			out = append(out, r)
		} else {
			delete(s.restrictions, k) // ended: pruned as read
		}
	}
	slices.SortFunc(out, func(a, b Restriction) int { return strings.Compare(a.UserID, b.UserID) })
	return out, nil
}

// Restricted implements Moderation.
func (s *Memory) Restricted(_ context.Context, roomID string, kind Kind, userID string, now time.Time) (Restriction, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.checkOpen(); err != nil {
		return Restriction{}, false, err
	}
	k := restrictionKey{roomID, userID, kind}
	r, ok := s.restrictions[k]
	if !ok || !r.InForce(now) {
		delete(s.restrictions, k) // ended: pruned as read
		return Restriction{}, false, nil
	}
	return r, true, nil
}

// SetPostRule implements Moderation.
func (s *Memory) SetPostRule(_ context.Context, roomID, rule string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.checkOpen(); err != nil {
		return err
	}
	if rule == "" {
		delete(s.postRules, roomID)
		return nil
	}
	if s.postRules == nil {
		s.postRules = make(map[string]string)
	}
	s.postRules[roomID] = rule
	return nil
}

// PostRule implements Moderation.
func (s *Memory) PostRule(_ context.Context, roomID string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.checkOpen(); err != nil {
		return "", err
	}
	return s.postRules[roomID], nil
}
