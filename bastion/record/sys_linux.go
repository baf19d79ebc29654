package record

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// freeSpace returns the bytes available to unprivileged writers in the
// filesystem holding dir.
func freeSpace(dir string) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}

// lockFile takes an exclusive advisory lock on f, so that two bastion
// processes never append to one audit log and fork its chain. The lock is
// released when f is closed.
func lockFile(f *os.File) error {
	err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	if errors.Is(err, syscall.EWOULDBLOCK) {
		return errors.New("another process has it open (is a second gatehouse bastion running?)")
	}
	if err != nil {
		return fmt.Errorf("flock: %w", err)
	}
	return nil
}
