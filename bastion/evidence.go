package bastion

import (
	"fmt"

	gossh "golang.org/x/crypto/ssh"

	"gatehouse/bastion/record"
)

// startCheckpoints makes the audit log (and the recordings index, in proxy
// mode) structured service-log entries as well, and signs checkpoints into
// both with the recording key every checkpoint_interval and at Close, each
// also signing the other log's head (record.EnableCheckpoints): cutting
// the tail of either, or deleting a recording with its index lines, then
// fails `gatehouse recordings verify --all --audit`. Without a
// recording_key (jump-only bastion) there is nothing to sign with: the log
// says so once.
func (s *Server) startCheckpoints() error {
	s.audit.SetLogger(s.log, "audit")
	var key gossh.Signer
	var index *record.Audit
	if s.proxy != nil {
		key, index = s.proxy.recCfg.SigningKey, s.proxy.recCfg.Index
		index.SetLogger(s.log, "index")
	} else if s.cfg.RecordingKey != "" {
		k, err := record.LoadSigningKey(s.cfg.RecordingKey)
		if err != nil {
			return fmt.Errorf("[bastion] recording_key (signs audit checkpoints): %w", err)
		}
		key = k
	}
	if key == nil {
		s.log.Warn("bastion: no [bastion] recording_key: the audit log gets no signed checkpoints, so lines cut from its end cannot be detected")
		return nil
	}
	iv := s.cfg.CheckpointInterval.Duration
	if err := s.audit.EnableCheckpoints(key, "audit", index, iv); err != nil {
		return fmt.Errorf("[bastion] audit_log: %w", err)
	}
	if index != nil {
		if err := index.EnableCheckpoints(key, "index", s.audit, iv); err != nil {
			return fmt.Errorf("[bastion] recordings_dir: recordings index: %w", err)
		}
	}
	return nil
}
