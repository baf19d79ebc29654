// Command gatehouse is the single checked entrance to an isolated network
// segment: a verified APT mirror ("goods") and a certificate-only SSH bastion
// that records sessions ("people").
//
// This package is the only one that touches process state: arguments,
// environment, stdout/stderr, signals, exit codes and the default logger.
// Each command is one runX function; errors are mapped to exit codes in one
// place (exitCode).
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
)

// cpuProfileEnv names a file to write a CPU profile of the whole command
// to (go tool pprof), for measuring a running bastion or sync from outside
// (README.md, "Benchmarks"). Unset, as in production, nothing is profiled.
const cpuProfileEnv = "GATEHOUSE_CPUPROFILE"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	stopProfile := startCPUProfile(os.Getenv(cpuProfileEnv))
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stopProfile()
	stop()
	os.Exit(code)
}

// startCPUProfile starts a CPU profile into path if it is set; the profile
// is complete once the returned function ran (at exit, after SIGTERM or
// Ctrl-C too). A profile that cannot be started is reported and skipped:
// it is a measuring aid, not a reason to refuse service.
func startCPUProfile(path string) (stop func()) {
	if path == "" {
		return func() {}
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err == nil {
		err = pprof.StartCPUProfile(f)
		if err != nil {
			f.Close()
		}
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "gatehouse: %s: not profiling: %v\n", cpuProfileEnv, err)
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}
