package upstream

import (
	"io"
	"testing"

	"golang.org/x/crypto/ssh"
)

// seqCmd prints about 6.9 MB.
const seqCmd = "seq 1 1000000"

func runSeq(b *testing.B, c *ssh.Client) int64 {
	s, err := c.NewSession()
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	out, err := s.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Start(seqCmd); err != nil {
		b.Fatal(err)
	}
	n, err := io.Copy(io.Discard, out)
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Wait(); err != nil {
		b.Fatal(err)
	}
	return n
}

// BenchmarkSeqDirect is the baseline: the minted-certificate connection
// to the real sshd, no relay.
//
//	go test -run='^$' -bench=Seq -benchtime=5x ./bastion/upstream
func BenchmarkSeqDirect(b *testing.B) {
	e := newEnv(b)
	c, _, err := e.dialer.Dial(b.Context(), e.target(), testWho)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	for b.Loop() {
		b.SetBytes(runSeq(b, c))
	}
}

// BenchmarkSeqRelayRecorded goes through an in-process SSH server, Relay
// and a recording (ttyrec + cast), as the bastion's recorded proxy does.
func BenchmarkSeqRelayRecorded(b *testing.B) {
	e := newEnv(b)
	rec, _ := newRecording(b, true)
	defer rec.Close("bench")
	f := startFront(b, e, frontOptions{rec: rec})
	c := f.client(b)
	for b.Loop() {
		b.SetBytes(runSeq(b, c))
		if err := <-f.results; err != nil {
			b.Fatal(err)
		}
	}
}
