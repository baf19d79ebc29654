package record

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestExportCast(t *testing.T) {
	cfg := RecorderConfig{Dir: t.TempDir()}
	rec, _ := recordSample(t, cfg, "exp")
	if err := rec.Close("done"); err != nil {
		t.Fatal(err)
	}
	cast, err := os.ReadFile(filepath.Join(cfg.Dir, "exp", "ch00.cast"))
	if err != nil {
		t.Fatal(err)
	}

	var text bytes.Buffer
	if err := ExportCast(&text, bytes.NewReader(cast), FormatText); err != nil {
		t.Fatal(err)
	}
	want := "$ echo café 😀 \"q\" \\ \tbold\nbinary: \ufffd\ufffd end\nünïcödé ✓\n$ exit 3\n[exit-status 3]\n"
	if text.String() != want {
		t.Errorf("text export\n got %q\nwant %q", text.String(), want)
	}

	var v3 bytes.Buffer
	if err := ExportCast(&v3, bytes.NewReader(cast), FormatAsciicastV3); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(v3.String(), "\n"), "\n")
	var hdr struct {
		Version int
		Term    struct {
			Cols, Rows int
			Type       string
		}
	}
	if err := json.Unmarshal([]byte(lines[0]), &hdr); err != nil || hdr.Version != 3 || hdr.Term.Cols != 100 || hdr.Term.Rows != 30 || hdr.Term.Type != "xterm-256color" {
		t.Errorf("v3 header %s: %v", lines[0], err)
	}
	var out strings.Builder
	sawExit := false
	for _, l := range lines[1:] {
		var ev []any
		if err := json.Unmarshal([]byte(l), &ev); err != nil || len(ev) != 3 {
			t.Fatalf("v3 event %q: %v", l, err)
		}
		if ev[0].(float64) < 0 {
			t.Errorf("negative interval in %q", l)
		}
		switch ev[1] {
		case "o":
			out.WriteString(ev[2].(string))
		case "x":
			sawExit = ev[2] == "3"
		}
	}
	_, evs := castEvents(t, filepath.Join(cfg.Dir, "exp", "ch00.cast"))
	if out.String() != castText(evs, "o") {
		t.Errorf("v3 output differs from v2")
	}
	if !sawExit {
		t.Error("no x event for exit-status 3")
	}
	if err := ExportCast(&v3, bytes.NewReader(cast), "tlog"); err == nil {
		t.Error("unknown format accepted")
	}
	if err := ExportCast(&v3, bytes.NewReader(cast[:len(cast)-3]), FormatText); err == nil || !strings.Contains(err.Error(), "truncated") {
		t.Errorf("truncated cast: %v", err)
	}
}

func FuzzReadCast(f *testing.F) {
	f.Add([]byte("{\"version\":2,\"width\":80,\"height\":24}\n[0.5, \"o\", \"hi\\u001b[1m\"]\n[1, \"m\", \"exit-status 3\"]\n"))
	f.Add([]byte("{\"version\":2,\"width\":80,\"height\":24}\n[2, \"o\", \"a\"]\n[1, \"o\", \"b\"]\n"))
	f.Add([]byte("{\"version\":3}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, format := range []string{FormatText, FormatAsciicastV3} {
			var out bytes.Buffer
			if err := ExportCast(&out, bytes.NewReader(data), format); err != nil {
				continue
			}
			if format == FormatAsciicastV3 {
				for _, l := range bytes.Split(bytes.TrimSuffix(out.Bytes(), []byte("\n")), []byte("\n")) {
					if !json.Valid(l) {
						t.Fatalf("invalid JSON line %q", l)
					}
				}
			}
		}
	})
}

func TestPlay(t *testing.T) {
	cast := "{\"version\":2,\"width\":80,\"height\":24}\n" +
		"[0.5, \"o\", \"a\"]\n[0.6, \"i\", \"x\"]\n[10.5, \"o\", \"b\"]\n[10.7, \"m\", \"exit-status 0\"]\n[11.5, \"o\", \"c\"]\n"
	var slept []time.Duration
	var out bytes.Buffer
	err := Play(context.Background(), &out, strings.NewReader(cast), PlayOptions{
		Speed: 2, IdleLimit: 3 * time.Second,
		Sleep: func(_ context.Context, d time.Duration) error { slept = append(slept, d); return nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	if out.String() != "abc" {
		t.Errorf("played %q", out.String())
	}
	want := []time.Duration{250 * time.Millisecond, 3 * time.Second, 500 * time.Millisecond}
	if fmt.Sprint(slept) != fmt.Sprint(want) {
		t.Errorf("sleeps %v, want %v", slept, want)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Play(ctx, &out, strings.NewReader(cast), PlayOptions{}); err != context.Canceled {
		t.Errorf("cancelled play: %v", err)
	}
}
