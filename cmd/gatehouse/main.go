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
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
