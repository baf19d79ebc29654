package record

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
)

// maxCastLine bounds one .cast line when reading; Output writes one event
// per SSH read, far below this.
const maxCastLine = 16 << 20

// Export formats for ExportCast.
const (
	FormatAsciicastV3 = "asciicast-v3"
	FormatText        = "text"
)

// CastEvent is one asciicast event: Time in seconds from the start, Code
// "o", "i", "r" or "m", and Data.
type CastEvent struct {
	Time float64
	Code string
	Data string
}

// CastHeader is an asciicast v2 header line (fields in the order the
// format's documentation shows them).
type CastHeader struct {
	Version   int               `json:"version"`
	Width     int               `json:"width"`
	Height    int               `json:"height"`
	Timestamp int64             `json:"timestamp"`
	Env       map[string]string `json:"env,omitempty"`
	Title     string            `json:"title,omitempty"`
}

// CastReader reads an asciicast v2 file event by event.
type CastReader struct {
	Header CastHeader
	lr     *lineReader
	line   int
	last   float64
}

// NewCastReader reads and checks the header of an asciicast v2 file.
func NewCastReader(r io.Reader) (*CastReader, error) {
	cr := &CastReader{lr: newLineReader(r, maxCastLine), line: 1}
	line, complete, err := cr.lr.next()
	if err == io.EOF {
		return nil, errors.New("cast: empty file")
	}
	if err != nil {
		return nil, fmt.Errorf("cast line 1: %w", err)
	}
	if !complete {
		return nil, errors.New("cast line 1: header without newline (truncated)")
	}
	h := &cr.Header
	if err := json.Unmarshal(line, h); err != nil {
		return nil, fmt.Errorf("cast line 1: header: %w", err)
	}
	if h.Version != 2 {
		return nil, fmt.Errorf("cast line 1: version %d, want 2", h.Version)
	}
	if h.Width <= 0 || h.Height <= 0 || h.Width > 10000 || h.Height > 10000 {
		return nil, fmt.Errorf("cast line 1: bad size %dx%d", h.Width, h.Height)
	}
	return cr, nil
}

// Next returns the next event, or io.EOF after the last. It rejects a
// malformed or over-long line, a partial last line and times that go
// backwards, naming the line.
func (cr *CastReader) Next() (CastEvent, error) {
	var ev CastEvent
	line, complete, err := cr.lr.next()
	if err == io.EOF {
		return ev, io.EOF
	}
	cr.line++
	if err != nil {
		return ev, fmt.Errorf("cast line %d: %w", cr.line, err)
	}
	if !complete {
		return ev, fmt.Errorf("cast line %d: no newline (truncated)", cr.line)
	}
	var raw []json.RawMessage
	if err := json.Unmarshal(line, &raw); err != nil || len(raw) != 3 {
		return ev, fmt.Errorf("cast line %d: not a [time, code, data] event", cr.line)
	}
	if json.Unmarshal(raw[0], &ev.Time) != nil || json.Unmarshal(raw[1], &ev.Code) != nil || json.Unmarshal(raw[2], &ev.Data) != nil {
		return ev, fmt.Errorf("cast line %d: bad event field types", cr.line)
	}
	if math.IsNaN(ev.Time) || math.IsInf(ev.Time, 0) || ev.Time < cr.last {
		return ev, fmt.Errorf("cast line %d: time %v is not after the previous event", cr.line, ev.Time)
	}
	cr.last = ev.Time
	return ev, nil
}

// ExportCast converts an asciicast v2 recording to format: "asciicast-v3"
// (relative times, a term object, and an "x" exit event after each
// "exit-status N" marker; asciinema 3 reads it) or "text" (the output with
// terminal control sequences removed and markers on their own lines).
func ExportCast(w io.Writer, cast io.Reader, format string) error {
	if format != FormatAsciicastV3 && format != FormatText {
		return fmt.Errorf("export: unknown format %q (want %s or %s)", Sanitize(format, 40), FormatAsciicastV3, FormatText)
	}
	cr, err := NewCastReader(cast)
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	bw := bufio.NewWriter(w)
	if format == FormatAsciicastV3 {
		err = exportV3(bw, cr)
	} else {
		err = exportText(bw, cr)
	}
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	return bw.Flush()
}

func exportV3(w *bufio.Writer, cr *CastReader) error {
	type term struct {
		Cols int    `json:"cols"`
		Rows int    `json:"rows"`
		Type string `json:"type,omitempty"`
	}
	hdr := struct {
		Version   int    `json:"version"`
		Term      term   `json:"term"`
		Timestamp int64  `json:"timestamp,omitempty"`
		Title     string `json:"title,omitempty"`
	}{3, term{cr.Header.Width, cr.Header.Height, cr.Header.Env["TERM"]}, cr.Header.Timestamp, cr.Header.Title}
	hb, err := json.Marshal(hdr)
	if err != nil {
		return err
	}
	w.Write(hb)
	w.WriteByte('\n')
	last := 0.0
	for {
		ev, err := cr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		writeV3Event(w, ev.Time-last, ev.Code, ev.Data)
		last = ev.Time
		if code, ok := strings.CutPrefix(ev.Data, "exit-status "); ok && ev.Code == "m" {
			if _, err := strconv.Atoi(code); err == nil {
				writeV3Event(w, 0, "x", code)
			}
		}
	}
}

func writeV3Event(w *bufio.Writer, dt float64, code, data string) {
	b := []byte{'['}
	b = strconv.AppendFloat(b, dt, 'f', 6, 64)
	b = append(b, ", "...)
	b = appendJSONText(b, []byte(code))
	b = append(b, ", "...)
	b = appendJSONText(b, []byte(data))
	b = append(b, "]\n"...)
	w.Write(b)
}

func exportText(w *bufio.Writer, cr *CastReader) error {
	var st textState
	for {
		ev, err := cr.Next()
		if err == io.EOF {
			if st.col > 0 {
				w.WriteByte('\n')
			}
			return nil
		}
		if err != nil {
			return err
		}
		switch ev.Code {
		case "o":
			st.write(w, ev.Data)
		case "m":
			if st.col > 0 {
				w.WriteByte('\n')
				st.col = 0
			}
			fmt.Fprintf(w, "[%s]\n", Sanitize(ev.Data, 200))
		}
	}
}

// textState strips terminal control sequences across event boundaries.
type textState struct {
	esc int // 0 none, 1 after ESC, 2 in CSI, 3 in OSC/DCS string, 4 ESC inside a string
	col int // bytes on the current output line
}

func (st *textState) write(w *bufio.Writer, s string) {
	for _, r := range s {
		switch st.esc {
		case 1:
			switch r {
			case '[':
				st.esc = 2
			case ']', 'P', '_', '^', 'X':
				st.esc = 3
			default:
				st.esc = 0 // two-character sequence
			}
			continue
		case 2:
			if r >= 0x40 && r <= 0x7e {
				st.esc = 0
			}
			continue
		case 3:
			if r == 0x07 {
				st.esc = 0
			} else if r == 0x1b {
				st.esc = 4
			}
			continue
		case 4:
			st.esc = 0 // ESC \ ends the string
			continue
		}
		switch {
		case r == 0x1b:
			st.esc = 1
		case r == '\n':
			w.WriteByte('\n')
			st.col = 0
		case r == '\t':
			w.WriteByte('\t')
			st.col++
		case r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0):
			// \r, bell, backspace and other controls carry no text.
		default:
			w.WriteRune(r)
			st.col++
		}
	}
}
