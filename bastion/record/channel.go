package record

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"
)

// Channel records one session channel as chNN.cast (asciicast v2) and
// chNN.ttyrec (byte-exact output). Its methods are safe for concurrent use
// and return the recording's failure once it has failed.
type Channel struct {
	r        *Recording
	n        int
	cast     *trackedFile
	ttyrec   *trackedFile
	start    time.Time
	pendOut  []byte // incomplete UTF-8 held back from the cast
	pendIn   []byte
	closed   bool
	bytesOut int64
	bytesIn  int64
	lastT    float64 // last cast event time
}

// Channel starts recording channel n of the given kind ("session").
// term, width and height come from the pty-req; without a pty pass "" and 0, 0 (80x24 is recorded).
// n numbers the connection's channels in the order they open (0, 1, 2…);
// it names the files, so it must not repeat even when SSH reuses a channel
// id. It also logs a channel.open event.
func (r *Recording) Channel(n int, kind, term string, width, height int) (*Channel, error) {
	if n < 0 {
		return nil, fmt.Errorf("recording %s: negative channel number %d", r.id, n)
	}
	if width <= 0 || height <= 0 || width > 10000 || height > 10000 {
		width, height = 80, 24
	}
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.failure(); err != nil {
		return nil, err
	}
	if r.closed {
		return nil, fmt.Errorf("recording %s: closed", r.id)
	}
	if _, ok := r.channels[n]; ok {
		return nil, fmt.Errorf("recording %s: channel %d already recorded", r.id, n)
	}
	base := fmt.Sprintf("ch%02d", n)
	cast, err := r.openFile(base + ".cast")
	if err != nil {
		return nil, err
	}
	tty, err := r.openFile(base + ".ttyrec")
	if err != nil {
		return nil, err
	}
	h := CastHeader{Version: 2, Width: width, Height: height, Timestamp: now.Unix(),
		Title: Sanitize(fmt.Sprintf("%s %s@%s ch%d %s", r.meta.Principal, r.meta.TargetLogin, r.meta.Target, n, kind), 200)}
	if term != "" {
		h.Env = map[string]string{"TERM": Sanitize(term, 64)}
	}
	hb, err := json.Marshal(h)
	if err != nil {
		return nil, fmt.Errorf("recording %s: cast header: %w", r.id, err)
	}
	cast.buf = append(append(getBuf(), hb...), '\n')
	c := &Channel{r: r, n: n, cast: cast, ttyrec: tty, start: now}
	r.channels[n] = c
	ev, err := encodeEvent(now, "channel.open", map[string]any{
		"channel": n, "kind": kind, "term": Sanitize(term, 64), "width": width, "height": height,
		"cast": cast.name, "ttyrec": tty.name,
	})
	if err != nil {
		return nil, err
	}
	if err := r.appendLocked(EventsFile, ev); err != nil {
		return nil, err
	}
	return c, nil
}

// Output records bytes the target sent to the client. The ttyrec gets them
// exactly; the cast gets them as text, holding an incomplete UTF-8
// sequence at the end back until the next call and replacing invalid bytes
// with U+FFFD.
func (c *Channel) Output(p []byte) error {
	c.r.mu.Lock()
	defer c.r.mu.Unlock()
	// Read the clock under the lock so events are in time order.
	now := c.r.now()
	if err := c.usable(); err != nil {
		return err
	}
	if len(p) == 0 {
		return nil
	}
	c.bytesOut += int64(len(p))
	tf := c.ttyrec
	if tf.buf == nil {
		tf.buf = getBuf()
	}
	var hdr [12]byte
	us := now.UnixMicro()
	binary.LittleEndian.PutUint32(hdr[0:], uint32(us/1e6))
	binary.LittleEndian.PutUint32(hdr[4:], uint32(us%1e6))
	binary.LittleEndian.PutUint32(hdr[8:], uint32(len(p)))
	tf.buf = append(tf.buf, hdr[:]...)
	tf.buf = append(tf.buf, p...)
	c.castEvent(now, 'o', &c.pendOut, p)
	if len(tf.buf) >= flushThreshold {
		c.r.enqueue(tf)
	}
	if len(c.cast.buf) >= flushThreshold {
		c.r.enqueue(c.cast)
	}
	return nil
}

// Input records bytes the client sent (asciicast "i"), when RecordInput is
// set; otherwise it only counts them.
func (c *Channel) Input(p []byte) error {
	c.r.mu.Lock()
	defer c.r.mu.Unlock()
	// Read the clock under the lock so events are in time order.
	now := c.r.now()
	if err := c.usable(); err != nil {
		return err
	}
	c.bytesIn += int64(len(p))
	if !c.r.cfg.RecordInput || len(p) == 0 {
		return nil
	}
	c.castEvent(now, 'i', &c.pendIn, p)
	if len(c.cast.buf) >= flushThreshold {
		c.r.enqueue(c.cast)
	}
	return nil
}

// Resize records a window change as an asciicast "r" event "WxH".
func (c *Channel) Resize(w, h int) error {
	return c.textEvent('r', strconv.Itoa(w)+"x"+strconv.Itoa(h))
}

// Marker records an asciicast "m" event, e.g. "exit-status 3" or
// "signal TERM" (v2 has no exit event).
func (c *Channel) Marker(label string) error {
	return c.textEvent('m', label)
}

func (c *Channel) textEvent(code byte, s string) error {
	c.r.mu.Lock()
	defer c.r.mu.Unlock()
	// Read the clock under the lock so events are in time order.
	now := c.r.now()
	if err := c.usable(); err != nil {
		return err
	}
	c.appendCastLine(now, code, []byte(s))
	return nil
}

// usable reports why the channel cannot record; c.r.mu must be held.
func (c *Channel) usable() error {
	if err := c.r.failure(); err != nil {
		return err
	}
	if c.closed || c.r.closed {
		return fmt.Errorf("recording %s: channel %d is closed", c.r.id, c.n)
	}
	return nil
}

// castEvent appends [t, code, text] for the complete UTF-8 prefix of
// pend+p and keeps the incomplete tail in pend.
func (c *Channel) castEvent(now time.Time, code byte, pend *[]byte, p []byte) {
	data := p
	if len(*pend) > 0 {
		data = append(*pend, p...)
		*pend = nil
	}
	cut := incompleteTail(data)
	if cut < len(data) {
		*pend = append([]byte(nil), data[cut:]...)
		data = data[:cut]
	}
	if len(data) > 0 {
		c.appendCastLine(now, code, data)
	}
}

// flushPending emits held-back bytes at channel close, where they can no
// longer be completed (they become U+FFFD); c.r.mu must be held.
func (c *Channel) flushPending() {
	now := c.r.now()
	if len(c.pendOut) > 0 {
		c.appendCastLine(now, 'o', c.pendOut)
		c.pendOut = nil
	}
	if len(c.pendIn) > 0 {
		c.appendCastLine(now, 'i', c.pendIn)
		c.pendIn = nil
	}
}

// incompleteTail returns the index where a trailing incomplete (but so far
// valid-looking) UTF-8 sequence starts, or len(b).
func incompleteTail(b []byte) int {
	for i := len(b) - 1; i >= 0 && i >= len(b)-3; i-- {
		if b[i]&0xC0 == 0x80 {
			continue // continuation byte: look further back for the lead
		}
		if !utf8.FullRune(b[i:]) {
			return i
		}
		break
	}
	return len(b)
}

// appendCastLine writes [t, "code", "json-escaped data"]\n to the cast.
func (c *Channel) appendCastLine(now time.Time, code byte, data []byte) {
	// asciinema sleeps for the difference between events; keep it
	// non-negative even if the injected clock steps back.
	t := max(now.Sub(c.start).Seconds(), c.lastT)
	c.lastT = t
	b := c.cast.buf
	if b == nil {
		b = getBuf()
	}
	b = append(b, '[')
	b = strconv.AppendFloat(b, t, 'f', 6, 64)
	b = append(b, ", \""...)
	b = append(b, code)
	b = append(b, "\", "...)
	b = appendJSONText(b, data)
	b = append(b, "]\n"...)
	c.cast.buf = b
}

const hexDigits = "0123456789abcdef"

// jsonEsc[c] is the escape letter for ASCII byte c ('u' for \u00XX), or 0
// when c is copied as is.
var jsonEsc = func() (t [utf8.RuneSelf]byte) {
	for c := 0; c < 0x20; c++ {
		t[c] = 'u'
	}
	t['\n'], t['\r'], t['\t'], t['\b'], t['\f'] = 'n', 'r', 't', 'b', 'f'
	t['"'], t['\\'], t[0x7f] = '"', '\\', 'u'
	return t
}()

// appendJSONText appends data as a JSON string, decoding it as UTF-8 and
// replacing each invalid byte with U+FFFD. It is on the hot path of every
// recorded byte, so it writes into pre-grown space instead of appending.
func appendJSONText(b, data []byte) []byte {
	// Worst case: every byte becomes a 6-byte escape, plus the quotes.
	b = slices.Grow(b, 6*len(data)+2)
	out := b[len(b) : len(b)+6*len(data)+2]
	j := 0
	out[j] = '"'
	j++
	for i := 0; i < len(data); {
		c := data[i]
		if c < utf8.RuneSelf {
			e := jsonEsc[c]
			switch e {
			case 0:
				out[j] = c
				j++
			case 'u':
				out[j], out[j+1], out[j+2], out[j+3], out[j+4], out[j+5] = '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF]
				j += 6
			default:
				out[j], out[j+1] = '\\', e
				j += 2
			}
			i++
			continue
		}
		r, size := utf8.DecodeRune(data[i:])
		if r == utf8.RuneError && size == 1 {
			j += copy(out[j:], `\ufffd`)
			i++
			continue
		}
		j += copy(out[j:], data[i:i+size])
		i += size
	}
	out[j] = '"'
	j++
	return b[:len(b)+j]
}

// Close ends the channel: held-back bytes are recorded (as U+FFFD), both
// files are flushed and closed, and a channel.close event with byte counts
// is logged.
func (c *Channel) Close() error {
	c.r.mu.Lock()
	defer c.r.mu.Unlock()
	if c.closed {
		return nil
	}
	if c.r.closed {
		return c.r.failure()
	}
	c.closeLocked()
	return c.r.failure()
}

// closeLocked closes the channel; c.r.mu must be held.
func (c *Channel) closeLocked() {
	if c.closed {
		return
	}
	if c.r.failure() == nil {
		c.flushPending()
		if ev, err := encodeEvent(c.r.now(), "channel.close", map[string]any{
			"channel": c.n, "bytes_out": c.bytesOut, "bytes_in": c.bytesIn,
		}); err == nil {
			c.r.appendLocked(EventsFile, ev)
		}
	}
	c.closed = true
	c.r.enqueueClose(c.cast)
	c.r.enqueueClose(c.ttyrec)
	delete(c.r.channels, c.n)
}
