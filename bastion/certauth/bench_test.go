package certauth

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// BenchmarkCheck measures one full Check of a valid certificate (ed25519 CA)
// against a KRL holding 100,000 revoked serials.
func BenchmarkCheck(b *testing.B) {
	f := newFixture(b)
	ca := f.key("ca", "ed25519", 0)
	user := f.key("user", "ed25519", 0)
	krl, _ := bigKRL(f, ca, 100000)
	chk, err := New(Config{UserCAKeys: f.write("user_ca.pub", f.read(ca+".pub")), RevokedKeys: krl, MaxCertLifetime: 24 * time.Hour}, time.Now, nil)
	if err != nil {
		b.Fatal(err)
	}
	cert := loadCert(b, f.cert(ca, user, "-I", "k", "-n", "alice", "-V", "-1m:+1h", "-z", "3"))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := chk.Check("alice", localhost, cert); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkParseKRL parses an ssh-keygen KRL revoking 100,000 random
// serials (list, range and bitmap subsections mixed).
func BenchmarkParseKRL(b *testing.B) {
	f := newFixture(b)
	ca := f.key("ca", "ed25519", 0)
	_, data := bigKRL(f, ca, 100000)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseKRL(data); err != nil {
			b.Fatal(err)
		}
	}
}

func bigKRL(f *fixture, ca string, n int) (string, []byte) {
	r := rand.New(rand.NewPCG(1, 2))
	var spec strings.Builder
	for range n {
		fmt.Fprintf(&spec, "serial: %d\n", 1000+r.Uint64N(uint64(n)*4))
	}
	p := filepath.Join(f.dir, "big.krl")
	f.keygen("-k", "-f", p, "-s", ca+".pub", f.write("big.spec", spec.String()))
	return p, f.readBytes(p)
}
