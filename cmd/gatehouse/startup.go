package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"
)

// checkStartup refuses to run a long-lived service (serve, bastion, run,
// sync) on an unsafe installation: a configuration file others may write
// (they could point the mirror at their own keyring), a private key others
// may read, or a state directory owned by another user. Each refusal names
// the file and the fix.
func checkStartup(configPath string, cfg *fileConfig) error {
	if err := notWritableByOthers(configPath, "configuration file"); err != nil {
		return err
	}
	if err := ownedByUs(cfg.StateDir); err != nil {
		return err
	}
	var keys []string
	if cfg.Signing.Key != "" {
		keys = append(keys, cfg.Signing.Key)
	}
	if cfg.Bastion != nil {
		keys = append(keys, cfg.Bastion.HostKeys...)
		if err := notWritableByOthers(cfg.Bastion.UserCAKeys, "user CA key file"); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	for _, k := range keys {
		st, err := os.Stat(k)
		if errors.Is(err, fs.ErrNotExist) {
			continue // the component that needs it reports a missing key
		}
		if err != nil {
			return usageErrorf("private key %s: %v", k, err)
		}
		if st.Mode().Perm()&0o077 != 0 {
			return usageErrorf("private key %s has mode %04o: other users may read it; run: chmod 600 %s", k, st.Mode().Perm(), k)
		}
	}
	return nil
}

func notWritableByOthers(path, what string) error {
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	if st.Mode().Perm()&0o022 != 0 {
		return usageErrorf("%s %s has mode %04o: other users may change it; run: chmod go-w %s", what, path, st.Mode().Perm(), path)
	}
	return nil
}

func ownedByUs(dir string) error {
	st, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // created on first use, owned by us
	}
	if err != nil {
		return usageErrorf("state directory %s: %v", dir, err)
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	if uid := os.Geteuid(); int(sys.Uid) != uid {
		return usageErrorf("state directory %s is owned by uid %d, but gatehouse runs as uid %d: run it as that user, or chown -R %d %s", dir, sys.Uid, uid, uid, dir)
	}
	if st.Mode().Perm()&0o022 != 0 {
		return usageErrorf("state directory %s has mode %04o: other users may change it; run: chmod go-w %s", dir, st.Mode().Perm(), dir)
	}
	return nil
}

// loadServiceConfig is loadConfig plus checkStartup, for commands that run
// services or change the mirror.
func loadServiceConfig(g *globals) (*fileConfig, error) {
	cfg, err := loadConfig(g.configPath)
	if err != nil {
		return nil, err
	}
	if err := checkStartup(g.configPath, cfg); err != nil {
		return nil, fmt.Errorf("refusing to start: %w", err)
	}
	return cfg, nil
}
