package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"
)

// cdpBrowser drives a real headless Chromium over the DevTools protocol on
// --remote-debugging-pipe (NUL-separated JSON on fds 3 and 4), so a test can
// wait in real time for what a page does instead of betting on
// --virtual-time-budget: the player paints in requestAnimationFrame, which
// virtual time does not reliably run.
type cdpBrowser struct {
	cmd *exec.Cmd
	w   io.WriteCloser

	mu      sync.Mutex
	nextID  int
	waiting map[int]chan cdpReply
	err     error
}

type cdpReply struct {
	Result json.RawMessage `json:"result"`
	Error  *struct {
		Message string `json:"message"`
	} `json:"error"`
}

// startCDP starts Chromium with a fresh profile, which it removes when the
// test ends: Chromium's helper processes may still write to the profile
// for a moment after the browser exits, so that removal retries instead
// of failing the test the way t.TempDir would.
func startCDP(t *testing.T, ctx context.Context) *cdpBrowser {
	t.Helper()
	profile, err := os.MkdirTemp("", "gatehouse-chromium-")
	if err != nil {
		t.Fatal(err)
	}
	toChrome, ourWrite, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	ourRead, fromChrome, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, "chromium", chromiumArgs(profile, "--remote-debugging-pipe", "--window-size=1000,700", "about:blank")...)
	cmd.ExtraFiles = []*os.File{toChrome, fromChrome}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	toChrome.Close()
	fromChrome.Close()
	b := &cdpBrowser{cmd: cmd, w: ourWrite, waiting: map[int]chan cdpReply{}}
	go b.readLoop(ourRead)
	t.Cleanup(func() {
		b.call("", "Browser.close", nil, nil)
		ourWrite.Close()
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		ourRead.Close()
		for i := 0; os.RemoveAll(profile) != nil && i < 50; i++ {
			time.Sleep(100 * time.Millisecond)
		}
	})
	return b
}

func (b *cdpBrowser) readLoop(r io.Reader) {
	br := bufio.NewReader(r)
	for {
		msg, err := br.ReadBytes(0)
		if err != nil {
			b.mu.Lock()
			b.err = fmt.Errorf("chromium's DevTools pipe: %w", err)
			for id, ch := range b.waiting {
				close(ch)
				delete(b.waiting, id)
			}
			b.mu.Unlock()
			return
		}
		var m struct {
			ID int `json:"id"`
			cdpReply
		}
		if json.Unmarshal(msg[:len(msg)-1], &m) != nil || m.ID == 0 {
			continue // an event
		}
		b.mu.Lock()
		ch := b.waiting[m.ID]
		delete(b.waiting, m.ID)
		b.mu.Unlock()
		if ch != nil {
			ch <- m.cdpReply
		}
	}
}

// call sends method (to the page session, when session is set) and decodes
// the result into out.
func (b *cdpBrowser) call(session, method string, params, out any) error {
	b.mu.Lock()
	if b.err != nil {
		b.mu.Unlock()
		return b.err
	}
	b.nextID++
	id := b.nextID
	ch := make(chan cdpReply, 1)
	b.waiting[id] = ch
	b.mu.Unlock()
	req := map[string]any{"id": id, "method": method}
	if params != nil {
		req["params"] = params
	}
	if session != "" {
		req["sessionId"] = session
	}
	msg, _ := json.Marshal(req)
	if _, err := b.w.Write(append(msg, 0)); err != nil {
		return fmt.Errorf("%s: %w", method, err)
	}
	select {
	case rep, ok := <-ch:
		if !ok {
			return fmt.Errorf("%s: %v", method, b.err)
		}
		if rep.Error != nil {
			return fmt.Errorf("%s: %s", method, rep.Error.Message)
		}
		if out != nil {
			return json.Unmarshal(rep.Result, out)
		}
		return nil
	case <-time.After(30 * time.Second):
		return fmt.Errorf("%s: no answer from chromium in 30 s", method)
	}
}

// open creates a page, installs script to run before the page's own
// scripts, navigates to url and returns the page's session.
func (b *cdpBrowser) open(url, script string) (string, error) {
	var target struct {
		TargetID string `json:"targetId"`
	}
	if err := b.call("", "Target.createTarget", map[string]any{"url": "about:blank"}, &target); err != nil {
		return "", err
	}
	var att struct {
		SessionID string `json:"sessionId"`
	}
	if err := b.call("", "Target.attachToTarget", map[string]any{"targetId": target.TargetID, "flatten": true}, &att); err != nil {
		return "", err
	}
	if err := b.call(att.SessionID, "Page.enable", nil, nil); err != nil {
		return "", err
	}
	if script != "" {
		if err := b.call(att.SessionID, "Page.addScriptToEvaluateOnNewDocument", map[string]any{"source": script}, nil); err != nil {
			return "", err
		}
	}
	var nav struct {
		ErrorText string `json:"errorText"`
	}
	if err := b.call(att.SessionID, "Page.navigate", map[string]any{"url": url}, &nav); err != nil {
		return "", err
	}
	if nav.ErrorText != "" {
		return "", fmt.Errorf("navigate %s: %s", url, nav.ErrorText)
	}
	return att.SessionID, nil
}

// eval evaluates a JavaScript expression in the page and returns its value
// as a string.
func (b *cdpBrowser) eval(session, expr string) (string, error) {
	var res struct {
		Result struct {
			Value any `json:"value"`
		} `json:"result"`
		ExceptionDetails *struct {
			Text string `json:"text"`
		} `json:"exceptionDetails"`
	}
	if err := b.call(session, "Runtime.evaluate", map[string]any{"expression": expr, "returnByValue": true}, &res); err != nil {
		return "", err
	}
	if res.ExceptionDetails != nil {
		return "", fmt.Errorf("evaluate %q: %s", expr, res.ExceptionDetails.Text)
	}
	if s, ok := res.Result.Value.(string); ok {
		return s, nil
	}
	v, _ := json.Marshal(res.Result.Value)
	return string(v), nil
}

// screenshot returns a PNG of the page as it is now.
func (b *cdpBrowser) screenshot(session string) ([]byte, error) {
	var res struct {
		Data []byte `json:"data"` // base64 in JSON
	}
	err := b.call(session, "Page.captureScreenshot", map[string]any{"format": "png"}, &res)
	return res.Data, err
}
