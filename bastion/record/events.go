package record

import (
	"encoding/json"
	"time"
)

// Event is one audit event as a typed Go value: the line's fields are the
// value's JSON fields (struct tags below), written in sorted key order at
// every level, so a typed event produces exactly the bytes the same fields
// did as a map. Consumers (metrics, the status page, the service log) take
// these values and switch on their type; nothing reads fields back by name.
//
// Field presence is part of the format: a field a line has only sometimes
// is a pointer to an embedded struct (nil: absent) or carries omitempty
// only where its zero value never occurs when present. TestEventEncoding
// pins the bytes.
type Event interface {
	// EventName is the "event" field: a stable name such as "auth".
	EventName() string
}

// ConnRef names the connection an event belongs to.
type ConnRef struct {
	ID     string `json:"conn"`   // random per connection
	Source string `json:"source"` // client address:port
}

// Identity is who an authenticated connection is, from its certificate
// (strings sanitised).
type Identity struct {
	Login      string   `json:"login"`
	Principals []string `json:"principals"`
	KeyID      string   `json:"key_id"`
	Serial     uint64   `json:"serial"`
	CAFP       string   `json:"ca_fp"`
	KeyFP      string   `json:"key_fp"`
}

// OfferedKey describes a key offered in a refused attempt, from the key
// itself only (it may be unverified).
type OfferedKey struct {
	KeyType string `json:"key_type"`
	KeyFP   string `json:"key_fp"` // of the certificate's plain key
	*OfferedCert
}

// OfferedCert is what a refused attempt's certificate claims.
type OfferedCert struct {
	KeyID      string   `json:"key_id"`
	Serial     uint64   `json:"serial"`
	Principals []string `json:"principals"`
	CAFP       string   `json:"ca_fp,omitempty"` // absent without a signature key
}

// AuthAccepted is the "auth" event of the attempt that authenticated a
// connection.
type AuthAccepted struct {
	ConnRef
	Identity
	Result      string    `json:"result"` // always "accepted"
	Method      string    `json:"method"`
	KeyType     string    `json:"key_type"`
	ValidBefore time.Time `json:"valid_before"`
	// ProxyTarget and TargetLogin are set for a login@host@bastion login.
	ProxyTarget string `json:"proxy_target,omitempty"`
	TargetLogin string `json:"target_login,omitempty"`
}

// EventName implements Event.
func (AuthAccepted) EventName() string { return "auth" }

// AuthRefused is the "auth" event of a refused attempt. It is written only
// if the connection later authenticates; otherwise its source's Preauth
// line counts it. Observers see every one.
type AuthRefused struct {
	ConnRef
	Result string `json:"result"` // always "refused"
	Method string `json:"method"`
	Login  string `json:"login"` // the attempt's login name, sanitised
	Reason string `json:"reason"`
	Detail string `json:"detail"`
	*OfferedKey
}

// EventName implements Event.
func (AuthRefused) EventName() string { return "auth" }

// ConnStart is written when a connection authenticates.
type ConnStart struct {
	ConnRef
	Connected string `json:"connected"` // RFC 3339 time of the TCP accept
}

// EventName implements Event.
func (ConnStart) EventName() string { return "conn.start" }

// ConnEnd ends a connection that had a ConnStart.
type ConnEnd struct {
	ConnRef
	*Identity
	Duration float64 `json:"duration"` // seconds
	Reason   string  `json:"reason"`
}

// EventName implements Event.
func (ConnEnd) EventName() string { return "conn.end" }

// Route is the rule (its index and the entry that matched) that allowed
// a destination.
type Route struct {
	Rule  int    `json:"rule"`
	Entry string `json:"entry"`
}

// ResolvedIP is a forward's resolved_ip field: the one address dialled
// (Addr, a JSON string) or, when the policy allowed none, every address the
// destination resolved to (All, a JSON list).
type ResolvedIP struct {
	Addr string
	All  []string
}

// IsZero reports an unresolved destination (the field is then absent).
func (r ResolvedIP) IsZero() bool { return r.Addr == "" && r.All == nil }

// MarshalJSON writes the string or the list.
func (r ResolvedIP) MarshalJSON() ([]byte, error) {
	if r.All != nil {
		return marshalNoEscape(r.All)
	}
	return marshalNoEscape(r.Addr)
}

// Forward is what the events of one direct-tcpip channel share.
type Forward struct {
	ConnRef
	Identity
	Destination string     `json:"destination"` // host:port as asked, sanitised
	ResolvedIP  ResolvedIP `json:"resolved_ip,omitzero"`
	*Route
}

// ForwardOpen is a jump forward that was allowed and dialled.
type ForwardOpen struct{ Forward }

// EventName implements Event.
func (ForwardOpen) EventName() string { return "forward.open" }

// ForwardEnd ends a ForwardOpen, with what was relayed.
type ForwardEnd struct {
	Forward
	BytesIn  int64   `json:"bytes_in"`  // client to target
	BytesOut int64   `json:"bytes_out"` // target to client
	Duration float64 `json:"duration"`  // seconds
}

// EventName implements Event.
func (ForwardEnd) EventName() string { return "forward" }

// ForwardDenied is a refused direct-tcpip channel.
type ForwardDenied struct {
	Forward
	Reason string `json:"reason"`
	Mode   string `json:"mode,omitempty"` // "proxy" when the inner SSH handshake of a proxy destination failed
}

// EventName implements Event.
func (ForwardDenied) EventName() string { return "forward.denied" }

// RequestDenied is a refused channel type or global request on the
// bastion itself (or, with Target, inside a proxy jump).
type RequestDenied struct {
	ConnRef
	*Identity
	Target  string `json:"target,omitempty"`
	Request string `json:"request"`
	Reason  string `json:"reason"`
}

// EventName implements Event.
func (RequestDenied) EventName() string { return "request.denied" }

// ProxySession names one recorded proxy session: every event about it
// carries these fields.
type ProxySession struct {
	ConnRef
	Identity
	Way         string `json:"way"`    // "jump" (ssh -J) or "login" (login@host@bastion)
	Target      string `json:"target"` // host:port as asked
	ResolvedIP  string `json:"resolved_ip"`
	TargetLogin string `json:"target_login"`
	Route
	Recording string `json:"recording"` // the recording's id
}

// ProxyRequestDenied is a refused channel type inside a proxy session.
type ProxyRequestDenied struct {
	ProxySession
	Request string `json:"request"`
	Reason  string `json:"reason"`
}

// EventName implements Event.
func (ProxyRequestDenied) EventName() string { return "request.denied" }

// ProxyStart is a proxy session whose target connection and recording
// started.
type ProxyStart struct {
	ProxySession
	UpstreamSerial uint64 `json:"upstream_serial"`
	UpstreamKeyID  string `json:"upstream_key_id"`
	TargetHostKey  string `json:"target_host_key"`
	HostKeyBy      string `json:"host_key_by"`
}

// EventName implements Event.
func (ProxyStart) EventName() string { return "proxy.start" }

// ProxyEnd ends a ProxyStart.
type ProxyEnd struct {
	ProxySession
	Reason   string  `json:"reason"`
	BytesIn  int64   `json:"bytes_in"`
	BytesOut int64   `json:"bytes_out"`
	Channels int     `json:"channels"`
	Duration float64 `json:"duration"`
}

// EventName implements Event.
func (ProxyEnd) EventName() string { return "proxy.end" }

// ProxyFailed is a proxy session whose target could not be reached.
type ProxyFailed struct {
	ProxySession
	Reason string `json:"reason"`
}

// EventName implements Event.
func (ProxyFailed) EventName() string { return "proxy.failed" }

// SFTPRefused is an SFTP channel closed for breaking the rules (a reused
// request id, an extension not allowed).
type SFTPRefused struct {
	ProxySession
	Channel int    `json:"channel"`
	Reason  string `json:"reason"`
}

// EventName implements Event.
func (SFTPRefused) EventName() string { return "sftp.refused" }

// RecordingFailed is a proxy session's recording that could not be
// started or written, or closed with an error.
type RecordingFailed struct {
	ProxySession
	Reason string `json:"reason"`
	Phase  string `json:"phase"` // start, session or close
}

// EventName implements Event.
func (RecordingFailed) EventName() string { return "recording.failed" }

// SealFailed is a recording a crash left open that could not be sealed
// or indexed at start-up.
type SealFailed struct {
	Recording string `json:"recording"`
	Reason    string `json:"reason"`
}

// EventName implements Event.
func (SealFailed) EventName() string { return "recording.failed" }

// RecordingSealed is a recording a crash left open, sealed at start-up.
type RecordingSealed struct {
	Recording string `json:"recording"`
	Reason    string `json:"reason"`
}

// EventName implements Event.
func (RecordingSealed) EventName() string { return "recording.sealed" }

// Reload is a configuration or trust-material reload.
type Reload struct {
	What    string `json:"what"`             // rules, config, ca+krl
	Result  string `json:"result,omitempty"` // ok, failed (absent for rules)
	Error   string `json:"error,omitempty"`
	Trigger string `json:"trigger,omitempty"` // "file changed" for a reload nobody asked for
	Rules   *int   `json:"rules,omitempty"`   // the rule count, when rules changed
	*ReloadChanges
}

// ReloadChanges are the [bastion] keys a config reload applied and those
// that changed but need a restart.
type ReloadChanges struct {
	Applied      []string `json:"applied"`
	NeedsRestart []string `json:"needs_restart"`
}

// EventName implements Event.
func (Reload) EventName() string { return "reload" }

// Preauth summarises one source's connections that ended before they
// authenticated, at most one line per source per penalty window.
type Preauth struct {
	Source      string         `json:"source"` // the address (IPv6: its /64), or "*" past the tracked sources
	Connections int            `json:"connections"`
	Outcomes    map[string]int `json:"outcomes"` // outcome → connections
	Since       string         `json:"since"`
	Port        *uint16        `json:"port,omitempty"` // the source port, when the line counts one connection
	// AuthRefused counts refused attempts and AuthReasons them by reason;
	// both are absent when there was none.
	AuthRefused          int             `json:"auth_refused,omitempty"`
	AuthReasons          map[string]int  `json:"auth_reasons,omitempty"`
	AuthReasonsUncounted int             `json:"auth_reasons_uncounted,omitempty"`
	Samples              []PreauthSample `json:"samples,omitempty"`
	PenalisedUntil       string          `json:"penalised_until,omitempty"`
}

// EventName implements Event.
func (Preauth) EventName() string { return "preauth" }

// PreauthSample describes one distinct pre-authentication outcome in
// full, with how often it was seen.
type PreauthSample struct {
	Outcome string `json:"outcome"`
	Detail  string `json:"detail"`
	Count   int    `json:"count"`
	*SampleAuth
}

// SampleAuth is the refused attempt a PreauthSample describes.
type SampleAuth struct {
	Reason string `json:"reason"`
	Login  string `json:"login"`
	Method string `json:"method"`
	*SampleKey
}

// SampleKey is the key a sampled attempt offered.
type SampleKey struct {
	KeyType string `json:"key_type"`
	KeyFP   string `json:"key_fp"`
	*SampleCert
}

// SampleCert is what a sampled attempt's certificate claimed.
type SampleCert struct {
	KeyID  string `json:"key_id"`
	Serial uint64 `json:"serial"`
	CAFP   string `json:"ca_fp,omitempty"`
}

// AuditGap is written by the audit log itself when writing works again
// after a failure: since when it failed, how many events were lost, why.
type AuditGap struct {
	Since      string `json:"since"`
	LostEvents int64  `json:"lost_events"`
	Error      string `json:"error"`
}

// EventName implements Event.
func (AuditGap) EventName() string { return "audit.gap" }

// AuditFailed is never written: observers get it instead of an event the
// audit log could not write.
type AuditFailed struct {
	Event Event
	Error string
}

// EventName implements Event.
func (AuditFailed) EventName() string { return "audit.failed" }

// RecordingStart is the recordings index line of a recording that
// started.
type RecordingStart struct {
	ID          string `json:"id"`
	User        string `json:"user"`
	Principal   string `json:"principal"`
	KeyID       string `json:"key_id"`
	Source      string `json:"source"`
	Target      string `json:"target"`
	TargetLogin string `json:"target_login"`
}

// EventName implements Event.
func (RecordingStart) EventName() string { return "recording.start" }

// RecordingClose is the recordings index line of a sealed recording: its
// manifest's final hash, so a manifest replaced later is caught.
type RecordingClose struct {
	ID            string `json:"id"`
	Final         string `json:"final"`
	Failed        bool   `json:"failed"`
	Reason        string `json:"reason"`
	ManifestError string `json:"manifest_error,omitempty"`
}

// EventName implements Event.
func (RecordingClose) EventName() string { return "recording.close" }

// CheckpointLine is a signed checkpoint's line (see Checkpoint, which
// reads it back); only the audit log writes it, on its own.
type CheckpointLine struct {
	Log      string `json:"log"`
	Lines    int64  `json:"lines"`
	Head     string `json:"head"`
	Signed   string `json:"signed"` // the signed text (Checkpoint.Message)
	Sig      string `json:"sig"`    // armored SSHSIG over Signed
	Interval string `json:"interval,omitempty"`
	*CheckpointPeer
	*CheckpointUnsealed
}

// CheckpointPeer is the other log's state a checkpoint also signs.
type CheckpointPeer struct {
	Peer      string `json:"peer"`
	PeerLines int64  `json:"peer_lines"`
	PeerHead  string `json:"peer_head"`
}

// CheckpointUnsealed marks the start-up checkpoint that seals lines an
// unclean stop left after the last checkpoint.
type CheckpointUnsealed struct {
	Unsealed int64  `json:"unsealed"`
	Reason   string `json:"reason"`
}

// EventName implements Event.
func (CheckpointLine) EventName() string { return CheckpointEvent }

// marshalNoEscape is json.Marshal without HTML escaping (<, >, & stay as
// they are in the audit log, as they always were).
func marshalNoEscape(v any) ([]byte, error) {
	var b []byte
	w := byteWriter{&b}
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return b[:len(b)-1], nil // Encode's newline
}

type byteWriter struct{ b *[]byte }

func (w byteWriter) Write(p []byte) (int, error) { *w.b = append(*w.b, p...); return len(p), nil }
