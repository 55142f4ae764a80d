// Package wsconn is the WebSocket wire code that roomchat's server does
// beside coder/websocket rather than through it: the socket under a
// websocket.Conn, as the library reads and writes it.
package wsconn
