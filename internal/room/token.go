package room

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"hash/fnv"
	"strings"
	"time"
)

// Resume tokens (SPEC §4 "Identity across reconnects") are signed, not
// looked up: a token names its user and the time it was issued, with an
// HMAC-SHA256 over both under the store's TokenKey. Any process holding
// the key can check one, so a token outlives the process that issued it
// (a restart, kill -9) and, with the key in a shared store, works on any
// node. A token cannot be forged without the key and cannot be guessed:
// its MAC is 128 bits.
//
// Layout, before base64url: version (1 byte) | issued, Unix ms (8 bytes,
// big-endian) | userID | MAC (16 bytes, over everything before it).
const (
	tokenVersion = 1
	tokenMACLen  = 16
	tokenHead    = 1 + 8
	// maxTokenLen bounds what is decoded: userIDs are 21-character nanoids.
	maxTokenLen = 128
)

// tokenDomain separates these MACs from anything else signed with the key.
var tokenDomain = []byte("roomchat resume token\x00")

// signer signs and checks resume tokens with key, or, when keyOf is set,
// with what it returns at each call: a cluster's store may take up the
// key another node put back in Redis after Redis lost it (SPEC §8).
type signer struct {
	key   []byte
	keyOf func() []byte
}

func (s signer) mac(body []byte) []byte {
	key := s.key
	if s.keyOf != nil {
		key = s.keyOf()
	}
	h := hmac.New(sha256.New, key)
	h.Write(tokenDomain)
	h.Write(body)
	return h.Sum(nil)[:tokenMACLen]
}

// sign returns the token of userID issued at t.
func (s signer) sign(userID string, t time.Time) string {
	b := make([]byte, tokenHead, tokenHead+len(userID)+tokenMACLen)
	b[0] = tokenVersion
	binary.BigEndian.PutUint64(b[1:], uint64(t.UnixMilli()))
	b = append(b, userID...)
	b = append(b, s.mac(b)...)
	return base64.RawURLEncoding.EncodeToString(b)
}

// verify returns the user and issue time of a token this key signed; ok
// is false for anything else, whatever it holds.
func (s signer) verify(token string) (userID string, issued time.Time, ok bool) {
	if len(token) > maxTokenLen {
		return "", time.Time{}, false
	}
	b, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil || len(b) < tokenHead+1+tokenMACLen || b[0] != tokenVersion {
		return "", time.Time{}, false
	}
	body, sum := b[:len(b)-tokenMACLen], b[len(b)-tokenMACLen:]
	if !hmac.Equal(sum, s.mac(body)) {
		return "", time.Time{}, false
	}
	ms := int64(binary.BigEndian.Uint64(body[1:tokenHead]))
	return string(body[tokenHead:]), time.UnixMilli(ms), true
}

// guestName is the default name of userID: derived from the ID, so that a
// user who resumes on a restarted server keeps the name it had.
func guestName(userID string) string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	h := fnv.New32a()
	h.Write([]byte(userID))
	n := h.Sum32()
	b := []byte("guest-xxxx")
	for i := 6; i < len(b); i++ {
		b[i] = alphabet[n%uint32(len(alphabet))]
		n /= uint32(len(alphabet))
	}
	return string(b)
}

// Owner keys (SPEC §11) are capabilities: a room's key is an HMAC-SHA256
// of its ID under the store's TokenKey, so that any node can check it,
// after restarts too, with nothing stored per key. Whoever holds it is
// the room's owner. Its MAC is 192 bits; the "k1." prefix versions it.
const ownerKeyPrefix = "k1."

// ownerDomain separates owner keys from resume tokens.
var ownerDomain = []byte("roomchat owner key\x00")

func (s signer) ownerMAC(roomID string) []byte {
	key := s.key
	if s.keyOf != nil {
		key = s.keyOf()
	}
	h := hmac.New(sha256.New, key)
	h.Write(ownerDomain)
	h.Write([]byte(roomID))
	return h.Sum(nil)[:24]
}

// ownerKey returns roomID's owner key.
func (s signer) ownerKey(roomID string) string {
	return ownerKeyPrefix + base64.RawURLEncoding.EncodeToString(s.ownerMAC(roomID))
}

// checkOwnerKey reports whether key is roomID's owner key, in constant
// time.
func (s signer) checkOwnerKey(roomID, key string) bool {
	rest, ok := strings.CutPrefix(key, ownerKeyPrefix)
	if !ok || len(rest) != 32 {
		return false
	}
	mac, err := base64.RawURLEncoding.DecodeString(rest)
	return err == nil && hmac.Equal(mac, s.ownerMAC(roomID))
}
