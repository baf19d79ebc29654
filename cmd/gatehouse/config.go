package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/BurntSushi/toml"

	"gatehouse/bastion"
	"gatehouse/mirror"
	"gatehouse/mirror/serve"
)

// fileConfig is the whole configuration file. Each package owns the struct of
// its own table; this type only assembles them.
type fileConfig struct {
	// StateDir holds pool, snapshots, keys and state (default /var/lib/gatehouse).
	StateDir string               `toml:"state_dir"`
	Mirror   []mirror.Config      `toml:"mirror"`
	Serve    serve.Config         `toml:"serve"`
	Signing  mirror.SigningConfig `toml:"signing"`
	Import   mirror.ImportConfig  `toml:"import"`
	// Status says who sees the bastion's sessions on the status page.
	Status statusConfig `toml:"status"`
	// Bastion is nil when the file has no [bastion] table.
	Bastion *bastion.Config `toml:"bastion"`
	// PublishTarget lists object storage buckets (publishtarget.go).
	PublishTarget []publishTarget `toml:"publish_target"`

	// pos and path locate every key of the file for check-config's
	// messages; set by parseConfig.
	pos  *configPositions
	path string
}

const defaultStateDir = "/var/lib/gatehouse"

// loadConfig reads and strictly decodes the configuration file at path: TOML
// syntax errors and unknown (e.g. misspelled) keys are usage errors naming the
// file, line and key.
func loadConfig(path string) (*fileConfig, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, usageErrorf("config file %s does not exist: create one with 'gatehouse init', or pass --config FILE", path)
		}
		return nil, usageErrorf("reading config: %v", err)
	}
	return parseConfig(path, data)
}

func parseConfig(path string, data []byte) (*fileConfig, error) {
	var c fileConfig
	md, err := toml.Decode(string(data), &c)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, usageErrorf("%s:%d: %s", path, pe.Position.Line, pe.Message)
		}
		return nil, usageErrorf("%s: %v", path, err)
	}
	pos := scanPositions(data)
	c.pos, c.path = pos, path
	if und := md.Undecoded(); len(und) > 0 {
		var msgs []string
		lines := pos.undecodedLines(und)
		for i, k := range und {
			msgs = append(msgs, fmt.Sprintf("%s:%d: unknown key %q", path, lines[i], k.String()))
		}
		return nil, usageErrorf("%s\n(check the spelling against the commented example from 'gatehouse init' or configs/gatehouse.toml)", strings.Join(msgs, "\n"))
	}
	if c.StateDir == "" {
		c.StateDir = defaultStateDir
	}
	if c.Bastion != nil {
		c.Bastion.Defaults()
		if err := c.Bastion.Validate(); err != nil {
			return nil, usageErrorf("%s:%d: %v", path, pos.line("bastion"), err)
		}
	}
	if _, err := c.Status.prefixes(); err != nil {
		return nil, usageErrorf("%s:%d: [status] %v", path, pos.line("status.sessions_from"), err)
	}
	if err := c.Serve.Validate(); err != nil {
		return nil, usageErrorf("%s: %v", path, err)
	}
	if c.Serve.MinSendRate != "" {
		if _, err := mirror.ParseRate(c.Serve.MinSendRate); err != nil {
			return nil, usageErrorf("%s:%d: [serve] min_send_rate: %v", path, pos.line("serve.min_send_rate"), err)
		}
	}
	seen := map[string]bool{}
	for i := range c.Mirror {
		m := &c.Mirror[i]
		m.Defaults()
		at := fmt.Sprintf("%s:%d", path, pos.line(fmt.Sprintf("mirror[%d]", i)))
		if err := m.Validate(); err != nil {
			return nil, usageErrorf("%s: %v", at, err)
		}
		if m.Mode == mirror.ModeFiltered && c.Signing.Key == "" {
			return nil, usageErrorf("%s: [[mirror]] name=%q: mode = \"filtered\" re-signs with the appliance's archive key: set [signing] key (create it with 'gatehouse keys init-archive-key')", at, m.Name)
		}
		if m.Name == "recordings" {
			// The status page serves session replay under /recordings/.
			return nil, usageErrorf("%s: [[mirror]] name %q is reserved for the status page's session replay; choose another name", at, m.Name)
		}
		if seen[m.Name] {
			return nil, usageErrorf("%s: two [[mirror]] tables are named %q; names must be unique", at, m.Name)
		}
		seen[m.Name] = true
	}
	if err := c.validatePublishTargets(path); err != nil {
		return nil, err
	}
	return &c, nil
}
