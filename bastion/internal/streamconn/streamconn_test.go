package streamconn

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"testing"
	"time"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	acc := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		acc <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-acc
	if server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// TestStreamOrder sends random-sized writes and reads them back with the
// read sizes x/crypto uses (4 bytes, 4 KiB, the rest of a packet): every
// byte arrives once, in order, and EOF follows.
func TestStreamOrder(t *testing.T) {
	w, r := tcpPair(t)
	c := New(r)
	want := make([]byte, 3<<20)
	for i := range want {
		want[i] = byte(rand.IntN(256))
	}
	go func() {
		p := want
		for len(p) > 0 {
			n := min(len(p), 1+rand.IntN(70<<10))
			w.Write(p[:n])
			p = p[n:]
		}
		w.Close()
	}()
	var got bytes.Buffer
	sizes := []int{4, 4096, 28 << 10, 1, 200 << 10}
	for i := 0; ; i++ {
		buf := make([]byte, sizes[i%len(sizes)])
		n, err := c.Read(buf)
		got.Write(buf[:n])
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(got.Bytes(), want) {
		t.Fatalf("got %d bytes, want %d; contents differ", got.Len(), len(want))
	}
	if c.big != nil {
		t.Error("a pooled buffer is still held after EOF")
	}
}

// TestStreamBatchesAndReleases checks what the wrapper is for: with data
// waiting in the socket, a 4-byte read takes up to 128 KiB at once, and
// once that is consumed, no buffer is held while the connection idles in a
// blocking read, which still returns data that arrives later.
func TestStreamBatchesAndReleases(t *testing.T) {
	w, r := tcpPair(t)
	c := New(r)
	if c.rc == nil {
		t.Fatal("a TCP connection was not recognised as a socket")
	}
	data := bytes.Repeat([]byte("0123456789abcdef"), (256<<10)/16)
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	// Let the loopback deliver everything before the first read.
	time.Sleep(100 * time.Millisecond)
	var p [4]byte
	if _, err := io.ReadFull(c, p[:]); err != nil {
		t.Fatal(err)
	}
	// The kernel may hand over a little less than asked for; several
	// 32 KiB packets in one read is the point.
	if got := len(c.pend); got < 64<<10 || got > streamReadBuf-4 {
		t.Fatalf("after one 4-byte read %d bytes are buffered, want 64 KiB to %d (one batched read)", got, streamReadBuf-4)
	}
	rest := make([]byte, len(data)-4)
	if _, err := io.ReadFull(c, rest); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(append(p[:], rest...), data) {
		t.Fatal("data differs")
	}
	if c.big != nil {
		t.Fatal("pooled buffer held after its bytes were consumed")
	}
	go func() {
		time.Sleep(50 * time.Millisecond)
		w.Write([]byte("late"))
	}()
	got := make([]byte, 16)
	n, err := c.Read(got)
	if err != nil || string(got[:n]) != "late" {
		t.Fatalf("blocking read: %q, %v", got[:n], err)
	}
	if c.big != nil {
		t.Fatal("a blocking read left a pooled buffer held")
	}
}

// TestStreamErrors: deadlines and Close behave as on the plain
// connection.
func TestStreamErrors(t *testing.T) {
	_, r := tcpPair(t)
	c := New(r)
	c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	var ne net.Error
	if _, err := c.Read(make([]byte, 8)); !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("read past the deadline: %v, want a timeout", err)
	}
	c.SetReadDeadline(time.Time{})
	c.Close()
	if _, err := c.Read(make([]byte, 8)); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read after Close: %v, want net.ErrClosed", err)
	}
}

// TestStreamPipe: a connection that is not a socket is read as is.
func TestStreamPipe(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	c := New(b)
	if c.rc != nil {
		t.Fatal("net.Pipe treated as a socket")
	}
	go a.Write([]byte("hello"))
	buf := make([]byte, 8)
	n, err := c.Read(buf)
	if err != nil || string(buf[:n]) != "hello" {
		t.Fatalf("%q %v", buf[:n], err)
	}
}

// TestStreamReadAllocs: a read that fills from the socket allocates
// nothing (the pooled buffer is reused; the read callback is bound once),
// so a relay's per-packet garbage is x/crypto's alone. Before, the
// callback's closure moved fill's locals to the heap on every read.
func TestStreamReadAllocs(t *testing.T) {
	client, server := tcpPair(t)
	c := New(server)
	chunk := make([]byte, 8<<10)
	buf := make([]byte, len(chunk))
	allocs := testing.AllocsPerRun(200, func() {
		if _, err := client.Write(chunk); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 0.5 {
		t.Errorf("%.1f allocations per write-and-read of %d bytes, want none", allocs, len(chunk))
	}
}
