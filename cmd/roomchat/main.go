// Command roomchat is the command-line client of roomchat (SPEC §7): create
// a room, chat in it from a terminal, send one message or custom event from
// a script, or follow a room as a stream of JSON events.
//
// Usage:
//
//	roomchat create
//	roomchat join ROOM [--name NAME] [--since SEQ | --from-start]
//	roomchat send ROOM TEXT...
//	roomchat event ROOM NAME [JSON]
//	roomchat tail ROOM [--since SEQ | --from-start] [--json]
//	roomchat redact ROOM SEQ [--reason R] [--key KEY | --token T]
//	roomchat kick|ban|unban|mute|unmute ROOM USER [--for D] [--reason R] [--key KEY | --token T]
//	roomchat configure ROOM --post members|moderators [--key KEY | --token T]
//
// Exit status: 0 on success, 1 for a server or network error, 2 for a
// usage error. Run roomchat -h for details.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
