package server_test

import (
	"os"
	"testing"

	"github.com/roomchat/roomchat/internal/chattest"
)

// TestMain fails the run if a goroutine of the server, its registry or its
// broker (a connection's reader or writer, a timer's callback, a closer)
// outlives the tests: every server is shut down at the end of its test,
// and Shutdown must wait for what it started.
func TestMain(m *testing.M) {
	os.Exit(chattest.Main(m,
		"github.com/roomchat/roomchat/internal/server.",
		"github.com/roomchat/roomchat/internal/room.",
		"github.com/roomchat/roomchat/internal/broker.",
	))
}
