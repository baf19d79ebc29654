package apttest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"golang.org/x/sys/unix"
)

// SeaweedVersion is the SeaweedFS module version the object-storage tests
// run; testdata/seaweed-wrapper/go.mod at the repository root requires it.
const SeaweedVersion = "v0.0.0-20261109003541-7506e5f91cd6"

// S3 is a real S3-compatible server (SeaweedFS's weed) on loopback.
type S3 struct {
	// Endpoint is "http://127.0.0.1:PORT": the S3 API, and, for objects
	// anonymous users may read, a plain HTTP server apt can use
	// (Endpoint/BUCKET/KEY).
	Endpoint string
	// AccessKey and SecretKey are the credentials of the one identity
	// allowed to write; anonymous requests may only read.
	AccessKey, SecretKey string
	// Log is weed's combined output, for failure messages.
	Log *bytes.Buffer
}

// WeedBinary returns the path of the weed binary the tests run, building
// it once per version into a cache directory when missing (about six
// minutes and 230 MB cold): $GATEHOUSE_WEED when set, else
// $XDG_CACHE_HOME/gatehouse-test (or /var/cache/gatehouse-test as root,
// ~/.cache/gatehouse-test otherwise)/weed-VERSION. ./test.sh builds it
// before `go test` so that parallel test binaries and the -race run do
// not each pay for it. The build happens outside gatehouse's go.mod, in
// testdata/seaweed-wrapper, because seaweedfs's go.mod has a replace
// directive that only a main module may state.
func WeedBinary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("GATEHOUSE_WEED"); p != "" {
		return p
	}
	p, err := BuildWeed(t.Logf)
	if err != nil {
		t.Fatalf("building SeaweedFS's weed for the object-storage tests: %v", err)
	}
	return p
}

// WeedCacheDir is where BuildWeed keeps weed binaries.
func WeedCacheDir() string {
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "gatehouse-test")
	}
	if os.Geteuid() == 0 {
		return "/var/cache/gatehouse-test"
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".cache", "gatehouse-test")
	}
	return filepath.Join(os.TempDir(), "gatehouse-test")
}

var weedMu sync.Mutex

// BuildWeed builds weed SeaweedVersion into WeedCacheDir unless it is
// there, under a file lock so that concurrent test processes build it
// once, and returns its path. logf reports a cold build.
func BuildWeed(logf func(string, ...any)) (string, error) {
	weedMu.Lock()
	defer weedMu.Unlock()
	dir := WeedCacheDir()
	bin := filepath.Join(dir, "weed-"+SeaweedVersion)
	if fi, err := os.Stat(bin); err == nil && fi.Mode().IsRegular() {
		return bin, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	lock, err := os.OpenFile(bin+".lock", os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		return "", err
	}
	if _, err := os.Stat(bin); err == nil {
		return bin, nil // another process built it while we waited
	}
	wrapper, err := wrapperDir()
	if err != nil {
		return "", err
	}
	logf("building SeaweedFS weed %s into %s (cold build: several minutes)", SeaweedVersion, bin)
	tmp := bin + ".tmp"
	cmd := exec.Command("go", "build", "-trimpath", "-o", tmp, "github.com/seaweedfs/seaweedfs/weed")
	cmd.Dir = wrapper
	cmd.Env = append(os.Environ(), "GOWORK=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build in %s: %v\n%s", wrapper, err, out)
	}
	return bin, os.Rename(tmp, bin)
}

// wrapperDir finds testdata/seaweed-wrapper at the root of gatehouse's
// module, from the test's working directory (a package directory).
func wrapperDir() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %v", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", fmt.Errorf("not inside gatehouse's module")
	}
	d := filepath.Join(filepath.Dir(gomod), "testdata", "seaweed-wrapper")
	if _, err := os.Stat(filepath.Join(d, "go.mod")); err != nil {
		return "", err
	}
	return d, nil
}

// freePorts returns n distinct free loopback ports.
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	var lns []net.Listener
	var ports []int
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	for _, ln := range lns {
		ln.Close()
	}
	return ports
}

// StartS3 runs `weed server` with a filer and the S3 gateway on loopback
// ports, with one writing identity and read-only anonymous access, until
// the test ends, and creates the given buckets. It fails (never skips)
// when weed cannot be built or started: CI must run these tests.
func StartS3(t testing.TB, buckets ...string) *S3 {
	t.Helper()
	bin := WeedBinary(t)
	dir := t.TempDir()
	s := &S3{AccessKey: "gatehouse-test", SecretKey: "test-secret-" + fmt.Sprint(time.Now().UnixNano()), Log: &bytes.Buffer{}}
	conf := map[string]any{"identities": []any{
		map[string]any{"name": "writer",
			"credentials": []any{map[string]string{"accessKey": s.AccessKey, "secretKey": s.SecretKey}},
			"actions":     []string{"Admin", "Read", "List", "Tagging", "Write"}},
		map[string]any{"name": "anonymous", "actions": []string{"Read"}},
	}}
	b, _ := json.Marshal(conf)
	cf := filepath.Join(dir, "s3.json")
	if err := os.WriteFile(cf, b, 0o600); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	if err := os.MkdirAll(data, 0o700); err != nil {
		t.Fatal(err)
	}
	p := freePorts(t, 7)
	s.Endpoint = fmt.Sprintf("http://127.0.0.1:%d", p[0])
	args := []string{"server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-dir=" + data,
		"-filer", "-s3", "-s3.config=" + cf,
		fmt.Sprintf("-s3.port=%d", p[0]), "-s3.port.iceberg=0", "-s3.port.lance=0",
		fmt.Sprintf("-master.port=%d", p[1]), fmt.Sprintf("-master.port.grpc=%d", p[2]),
		fmt.Sprintf("-filer.port=%d", p[3]), fmt.Sprintf("-filer.port.grpc=%d", p[4]),
		fmt.Sprintf("-volume.port=%d", p[5]), fmt.Sprintf("-volume.port.grpc=%d", p[6]),
		"-master.volumeSizeLimitMB=64", "-volume.max=0", "-volume.preStopSeconds=0",
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = s.Log, s.Log
	var logMu sync.Mutex
	cmd.Stdout = lockedWriter{&logMu, s.Log}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("starting weed: %v", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cancel()
		<-done
		if t.Failed() {
			logMu.Lock()
			t.Logf("weed output:\n%s", tail(s.Log.Bytes(), 8000))
			logMu.Unlock()
		}
	})
	c, err := minio.New(strings.TrimPrefix(s.Endpoint, "http://"), &minio.Options{
		Creds: credentials.NewStaticV4(s.AccessKey, s.SecretKey, ""), BucketLookup: minio.BucketLookupPath})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(3 * time.Minute)
	for _, bucket := range buckets {
		for {
			cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
			err = c.MakeBucket(cctx, bucket, minio.MakeBucketOptions{})
			ccancel()
			if err == nil {
				break
			}
			select {
			case <-done:
				logMu.Lock()
				defer logMu.Unlock()
				t.Fatalf("weed exited while starting:\n%s", tail(s.Log.Bytes(), 8000))
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("weed's S3 gateway did not accept a bucket in 3 minutes: %v", err)
			}
			time.Sleep(250 * time.Millisecond)
		}
	}
	// Until the filer has its lock ring, object writes log "no lock
	// server found" and are not serialised per key; a publish racing
	// that window served apt a stale index now and then. Wait for the
	// ring (bounded: a weed that never logs it is used as it is).
	for ready := time.Now().Add(30 * time.Second); time.Now().Before(ready); time.Sleep(100 * time.Millisecond) {
		logMu.Lock()
		up := bytes.Contains(s.Log.Bytes(), []byte("applying master ring update"))
		logMu.Unlock()
		if up {
			break
		}
	}
	return s
}

// Client returns a minio-go client with the writing identity.
func (s *S3) Client(t testing.TB) *minio.Client {
	t.Helper()
	c, err := minio.New(strings.TrimPrefix(s.Endpoint, "http://"), &minio.Options{
		Creds: credentials.NewStaticV4(s.AccessKey, s.SecretKey, ""), BucketLookup: minio.BucketLookupPath})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Get fetches Endpoint/path anonymously, as apt does, and returns the
// status and body.
func (s *S3) Get(t testing.TB, path string) (int, []byte) {
	t.Helper()
	resp, err := http.Get(s.Endpoint + "/" + strings.TrimPrefix(path, "/"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	return resp.StatusCode, b.Bytes()
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
