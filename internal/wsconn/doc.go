// Package wsconn is the WebSocket wire code that roomchat's server does
// beside coder/websocket rather than through it: the socket under a
// websocket.Conn, as the library reads and writes it (RFC 6455 §5).
//
// The server needs more than the library's API in four places, each for
// speed or memory on its hottest path:
//
//   - it frames its own text messages (Text), a whole drain of a
//     connection's queue in one write to the socket (Hold, Release),
//     where the library's Write takes a lock, a select and a 16-byte
//     buffer per message;
//   - it sends keepalive pings between two frames of that drain (Ping),
//     following the library's own control frames byte by byte;
//   - its read loop waits for a client's next bytes above the library
//     (WaitReadable), so that an idle connection parks with a 2 KiB stack,
//     and takes the pongs to its pings out of the library's read buffer
//     itself (TakePongs);
//   - it bounds how long a client's message may take to arrive, following
//     the client's frames in what it reads (the frame timeout of Accept,
//     TimedOut).
//
// # What it relies on
//
// Each of these is a behaviour of coder/websocket v1.8.15 that its API
// does not promise. Each has a test in library_test.go, over real
// sockets, and TestLibraryVersion fails when the build takes another
// version: re-check this list against the new source before moving the
// pin.
//
//	B1. Accept hijacks through the Hijack method of the
//	    http.ResponseWriter it is given, once, after the 101 response is
//	    written by net/http; it writes nothing through the returned
//	    bufio.Writer. (TestLibraryUsesOnlyTheBufioPair)
//	B2. Accept takes what the returned bufio.Reader has buffered and
//	    resets the reader onto io.MultiReader(those bytes, the returned
//	    net.Conn): the bytes are no longer Buffered, but the reader's next
//	    fill returns them, from the same array, without reading the
//	    socket. Accept (ours) Peeks them back into the buffer, else a frame
//	    that came in the same TCP segment as the upgrade request would wait
//	    for the client's next bytes. (TestAcceptMovesBufferedBytes,
//	    TestFrameWithTheUpgrade)
//	B3. From then on the library reads the socket only through that
//	    reader, so the returned net.Conn (a peekConn) sees every read;
//	    writes only through the returned bufio.Writer, in pieces, ending
//	    each frame with a Flush; and calls only Close on the net.Conn.
//	    (TestLibraryUsesOnlyTheBufioPair)
//	B4. It never sets a deadline on the net.Conn (its timeouts close it
//	    instead): the socket's deadlines are ours to set.
//	    (TestLibraryUsesOnlyTheBufioPair)
//	B5. A message read to io.EOF leaves the frames after it in the
//	    reader's buffer: the library reads the next frame's header only
//	    when Reader is called again, so between messages TakePongs may
//	    take whole pong frames from the head of the buffer.
//	    (TestReadStopsAtTheMessage)
//	B6. A ping read inside Reader is answered with one unmasked pong
//	    through the writer unless OnPingReceived returns false; a pong
//	    calls OnPongReceived. Pongs and the close frame are the only
//	    frames the library writes for a server that never calls its
//	    Write or Ping. (TestLibraryAnswersPings)
//	B7. Close writes one close frame and nothing after it, then reads
//	    the peer's close frame through the reader.
//	    (TestCloseFrameIsLast)
//	B8. A server's frames are unmasked, and compression is negotiated
//	    only when AcceptOptions.CompressionMode asks for it: a text frame
//	    is its header (FIN, opcode, shortest length) and the payload, as
//	    Text writes it. (TestTextFramedAsTheLibraryDoes)
package wsconn
