package apttest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// Nginx runs a real nginx on a free loopback port until the test ends and
// returns its "host:port" and the path of its access log. server renders
// the http block's server part for that address (for example
// "server { listen ADDR; root DIR; }", or README's configuration with its
// listen and root replaced). accessFormat, when not empty, is the
// log_format of the access log (for example
// "$request $status inm=$http_if_none_match"). It skips the test only when
// nginx is not installed.
func Nginx(t testing.TB, server func(addr string) string, accessFormat string) (addr, accessLog string) {
	t.Helper()
	bin, err := exec.LookPath("nginx")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/nginx"); serr != nil {
			t.Skip("nginx not installed")
		}
		bin = "/usr/sbin/nginx"
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr = ln.Addr().String()
	ln.Close()
	prefix := t.TempDir()
	accessLog = filepath.Join(prefix, "access.log")
	user := ""
	if os.Geteuid() == 0 {
		user = "user root;" // workers must read the test's 0700 temp dirs
	}
	logDirective := "access_log " + accessLog + ";"
	if accessFormat != "" {
		logDirective = fmt.Sprintf("log_format test '%s';\n\taccess_log %s test;", accessFormat, accessLog)
	}
	conf := fmt.Sprintf(`%s
worker_processes 1;
pid %[2]s/nginx.pid;
error_log %[2]s/error.log;
events { worker_connections 64; }
http {
	%[3]s
	client_body_temp_path %[2]s;
	proxy_temp_path %[2]s;
	fastcgi_temp_path %[2]s;
	uwsgi_temp_path %[2]s;
	scgi_temp_path %[2]s;
	keepalive_requests 10000;
%[4]s
}
`, user, prefix, logDirective, server(addr))
	cf := filepath.Join(prefix, "nginx.conf")
	if err := os.WriteFile(cf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-p", prefix, "-c", cf, "-g", "daemon off;")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	for i := 0; ; i++ {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			break
		}
		if i > 100 {
			t.Fatalf("nginx did not start: %v\n%s", err, stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return addr, accessLog
}

// NginxRoot serves dir as a plain static tree with Nginx and returns its
// base URL ("http://host:port") and access log.
func NginxRoot(t testing.TB, dir, accessFormat string) (base, accessLog string) {
	t.Helper()
	addr, accessLog := Nginx(t, func(addr string) string {
		return fmt.Sprintf("\tserver {\n\t\tlisten %s;\n\t\troot %s;\n\t}", addr, dir)
	}, accessFormat)
	return "http://" + addr, accessLog
}
