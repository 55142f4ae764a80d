package client

import (
	"errors"
	"fmt"
	"net/url"
	"path"
	"strings"

	"github.com/roomchat/roomchat/internal/protocol"
)

// WebSocketURL turns a server URL (http://host[:port][/prefix], https://…,
// or a ws:// or wss:// URL, with or without the final /ws) into the URL of its WebSocket endpoint,
// ws(s)://host[:port][/prefix]/ws. A bare host:port is taken as http.
func WebSocketURL(serverURL string) (*url.URL, error) {
	u, err := parseServer(serverURL)
	if err != nil {
		return nil, err
	}
	switch u.Scheme {
	case "http":
		u.Scheme = "ws"
	case "https":
		u.Scheme = "wss"
	}
	if !strings.HasSuffix(u.Path, "/ws") { // a ws:// URL may name the endpoint already
		u.Path = path.Join("/", u.Path, "ws")
	}
	u.RawPath = ""
	u.RawQuery = ""
	u.Fragment = ""
	return u, nil
}

func parseServer(serverURL string) (*url.URL, error) {
	s := strings.TrimSpace(serverURL)
	if s == "" {
		return nil, errors.New("server URL is empty")
	}
	if !strings.Contains(s, "://") {
		s = "http://" + s
	}
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("server URL %q: %w", serverURL, err)
	}
	switch u.Scheme {
	case "http", "https", "ws", "wss":
	default:
		return nil, fmt.Errorf("server URL %q: scheme must be http, https, ws or wss", serverURL)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("server URL %q has no host", serverURL)
	}
	return u, nil
}

// ParseRoom accepts a room ID or a share link (http://host/r/ID, as in a
// created event's url) and returns the room ID and, for a link, the server
// URL it points at (scheme://host plus any path before /r/). For a plain ID
// server is "". The ID is checked against SPEC §4's room ID rule.
func ParseRoom(room string) (roomID, server string, err error) {
	room = strings.TrimSpace(room)
	if strings.Contains(room, "://") {
		u, err := url.Parse(room)
		if err != nil {
			return "", "", fmt.Errorf("room link %q: %w", room, err)
		}
		i := strings.LastIndex(u.Path, "/r/")
		if i < 0 || u.Host == "" {
			return "", "", fmt.Errorf("room link %q: want a share link like http://host/r/ROOM", room)
		}
		roomID = strings.TrimSuffix(u.Path[i+len("/r/"):], "/")
		server = (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path[:i]}).String()
	} else {
		roomID = room
	}
	if perr := protocol.DefaultLimits().CheckRoomID("room", roomID); perr != nil {
		return "", "", fmt.Errorf("room %q: %s", roomID, perr.Message)
	}
	return roomID, server, nil
}

// APIURL turns a server URL (as WebSocketURL takes it) into the base of its
// HTTP API, http(s)://host[:port][/prefix], without a final slash: a ws://
// or wss:// URL becomes http:// or https://, and a final /ws is dropped.
func APIURL(serverURL string) (*url.URL, error) {
	u, err := parseServer(serverURL)
	if err != nil {
		return nil, err
	}
	switch u.Scheme {
	case "ws":
		u.Scheme = "http"
	case "wss":
		u.Scheme = "https"
	}
	u.Path = strings.TrimSuffix(strings.TrimSuffix(u.Path, "/"), "/ws")
	u.RawPath = ""
	u.RawQuery = ""
	u.Fragment = ""
	return u, nil
}
