//go:build !linux

package record

import (
	"errors"
	"os"
)

// freeSpace is not implemented off Linux; with MinFreeSpace set,
// NewRecording then refuses (fail closed) instead of guessing.
func freeSpace(dir string) (int64, error) {
	return 0, errors.New("free-space check is only implemented on Linux; set min_free_space to 0 to disable it")
}

// lockFile is a no-op off Linux; the bastion supports Linux only.
func lockFile(f *os.File) error { return nil }
