package room

import (
	"bytes"
	"encoding/base64"
	"testing"
	"time"
)

// FuzzVerifyToken: a resume token comes from outside (GET /ws?resume=…),
// so verify sees anything. It never panics; what it accepts decodes to
// exactly the bytes that sign gives for the user and time it returns (so
// only a token the key signed is accepted, in whatever base64 spelling the
// decoder tolerates), and a key that did not sign it accepts nothing.
// The second half signs the fuzzer's user and time and checks that verify
// gives them back, and that a changed byte is refused.
func FuzzVerifyToken(f *testing.F) {
	s := signer{key: []byte("fuzz key: 32 bytes of anything..")}
	other := signer{key: []byte("another key, also 32 bytes long.")}
	at := time.UnixMilli(1_750_000_000_123)
	f.Add(s.sign("V1StGXR8_Z5jdHi6B-myT", at), "V1StGXR8_Z5jdHi6B-myT", at.UnixMilli(), uint(0))
	f.Add(other.sign("V1StGXR8_Z5jdHi6B-myT", at), "u", int64(0), uint(7))
	f.Add("", "", int64(-1), uint(1))
	f.Add("AQ", "x", int64(1)<<62, uint(40))
	f.Add("not base64!", "é", int64(-1)<<62, uint(3))
	f.Add(s.sign("u", at)+"\n", "\x00", int64(42), uint(100))
	f.Fuzz(func(t *testing.T, token, userID string, ms int64, flip uint) {
		id, issued, ok := s.verify(token)
		if ok {
			got, err := base64.RawURLEncoding.DecodeString(token)
			want, _ := base64.RawURLEncoding.DecodeString(s.sign(id, issued))
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("verify(%q) accepted user %q issued %v, which signs to other bytes", token, id, issued)
			}
			if id == "" {
				t.Fatalf("verify(%q) accepted an empty userID", token)
			}
			if _, _, ok := other.verify(token); ok {
				t.Fatalf("token %q verifies under two keys", token)
			}
		} else if id != "" || !issued.IsZero() {
			t.Fatalf("verify(%q) refused but returned %q, %v", token, id, issued)
		}

		if userID == "" {
			return
		}
		tok := s.sign(userID, time.UnixMilli(ms))
		id, issued, ok = s.verify(tok)
		if len(tok) > maxTokenLen {
			if ok {
				t.Fatalf("verify accepted a %d-character token, over the %d bound", len(tok), maxTokenLen)
			}
			return
		}
		if !ok || id != userID || issued.UnixMilli() != ms {
			t.Fatalf("verify(sign(%q, %d)) = %q, %d, %v", userID, ms, id, issued.UnixMilli(), ok)
		}
		b, _ := base64.RawURLEncoding.DecodeString(tok)
		i := flip % uint(len(b))
		b[i] ^= 1 << (flip / uint(len(b)) % 8)
		if id, _, ok := s.verify(base64.RawURLEncoding.EncodeToString(b)); ok {
			t.Fatalf("a token with byte %d changed still verifies (user %q)", i, id)
		}
	})
}
