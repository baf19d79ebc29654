package record

import (
	"bytes"
	"sort"
	"testing"
	"time"
)

// oldEncode is how the audit log encoded an event given as a map before
// events were typed: `,"event":…` then each field in sorted key order,
// each value encoded without HTML escaping.
func oldEncode(t *testing.T, event string, fields map[string]any) string {
	t.Helper()
	var b bytes.Buffer
	b.WriteString(`,"event":`)
	writeJSON(&b, event)
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		b.WriteByte(',')
		writeJSON(&b, k)
		b.WriteByte(':')
		if err := writeJSON(&b, fields[k]); err != nil {
			t.Fatal(err)
		}
	}
	return b.String()
}

// TestEventEncoding pins the bytes of typed events to those the same
// fields gave as maps (the format `recordings verify`, the hash chain and
// every reader of audit.jsonl know): same keys, same presence, same value
// encoding, sorted at every level, no HTML escaping.
func TestEventEncoding(t *testing.T) {
	vb := time.Date(2026, 12, 7, 20, 0, 0, 123, time.UTC)
	id := Identity{Login: "alice", Principals: []string{"alice", "ops"}, KeyID: "alice <&>", Serial: 0, CAFP: "SHA256:ca", KeyFP: "SHA256:k"}
	idMap := func(m map[string]any) map[string]any {
		m["login"], m["principals"], m["key_id"], m["serial"], m["ca_fp"], m["key_fp"] = "alice", []string{"alice", "ops"}, "alice <&>", uint64(0), "SHA256:ca", "SHA256:k"
		return m
	}
	conn := ConnRef{ID: "c1", Source: "127.0.0.1:5000"}
	cm := func() map[string]any { return map[string]any{"conn": "c1", "source": "127.0.0.1:5000"} }
	with := func(m map[string]any, kv ...any) map[string]any {
		for i := 0; i < len(kv); i += 2 {
			m[kv[i].(string)] = kv[i+1]
		}
		return m
	}
	port := uint16(40000)
	zero := 0
	ps := ProxySession{ConnRef: conn, Identity: id, Way: "jump", Target: "web:22", ResolvedIP: "10.0.0.5", TargetLogin: "deploy",
		Route: Route{Rule: 1, Entry: "web:22"}, Recording: "c1-1"}
	psm := func() map[string]any {
		return idMap(with(cm(), "way", "jump", "target", "web:22", "resolved_ip", "10.0.0.5", "target_login", "deploy", "rule", 1, "entry", "web:22", "recording", "c1-1"))
	}
	fw := Forward{ConnRef: conn, Identity: id, Destination: "web:22"}
	for _, tc := range []struct {
		ev   Event
		want map[string]any
	}{
		{AuthAccepted{ConnRef: conn, Identity: id, Result: "accepted", Method: "publickey", KeyType: "ssh-ed25519-cert-v01@openssh.com", ValidBefore: vb},
			idMap(with(cm(), "result", "accepted", "method", "publickey", "key_type", "ssh-ed25519-cert-v01@openssh.com", "valid_before", vb))},
		{AuthAccepted{ConnRef: conn, Identity: id, Result: "accepted", Method: "publickey", KeyType: "k", ValidBefore: vb, ProxyTarget: "web:22", TargetLogin: "deploy"},
			idMap(with(cm(), "result", "accepted", "method", "publickey", "key_type", "k", "valid_before", vb, "proxy_target", "web:22", "target_login", "deploy"))},
		{AuthRefused{ConnRef: conn, Result: "refused", Method: "none", Login: "root", Reason: "method-not-offered", Detail: ""},
			with(cm(), "result", "refused", "method", "none", "login", "root", "reason", "method-not-offered", "detail", "")},
		{AuthRefused{ConnRef: conn, Result: "refused", Method: "publickey", Login: "root", Reason: "not-a-certificate", Detail: "d",
			OfferedKey: &OfferedKey{KeyType: "ssh-ed25519", KeyFP: "SHA256:p"}},
			with(cm(), "result", "refused", "method", "publickey", "login", "root", "reason", "not-a-certificate", "detail", "d", "key_type", "ssh-ed25519", "key_fp", "SHA256:p")},
		{AuthRefused{ConnRef: conn, Result: "refused", Method: "publickey", Login: "root", Reason: "untrusted-ca", Detail: "d",
			OfferedKey: &OfferedKey{KeyType: "c", KeyFP: "SHA256:p", OfferedCert: &OfferedCert{KeyID: "", Serial: 0, Principals: []string{}}}},
			with(cm(), "result", "refused", "method", "publickey", "login", "root", "reason", "untrusted-ca", "detail", "d", "key_type", "c", "key_fp", "SHA256:p",
				"key_id", "", "serial", uint64(0), "principals", []string{})},
		{ConnStart{ConnRef: conn, Connected: "2026-12-07T20:00:00Z"}, with(cm(), "connected", "2026-12-07T20:00:00Z")},
		{ConnEnd{ConnRef: conn, Duration: 1.5, Reason: "closed by client"}, with(cm(), "duration", 1.5, "reason", "closed by client")},
		{ConnEnd{ConnRef: conn, Identity: &id, Duration: 0, Reason: "x"}, idMap(with(cm(), "duration", 0.0, "reason", "x"))},
		{ForwardDenied{Forward: fw, Reason: "no rule"}, idMap(with(cm(), "destination", "web:22", "reason", "no rule"))},
		{ForwardDenied{Forward: Forward{ConnRef: conn, Identity: id, Destination: "web:22", ResolvedIP: ResolvedIP{All: []string{"10.0.0.5"}}}, Reason: "no rule"},
			idMap(with(cm(), "destination", "web:22", "resolved_ip", []string{"10.0.0.5"}, "reason", "no rule"))},
		{ForwardDenied{Forward: Forward{ConnRef: conn, Identity: id, Destination: "web:22", ResolvedIP: ResolvedIP{Addr: "10.0.0.5"}}, Reason: "r", Mode: "proxy"},
			idMap(with(cm(), "destination", "web:22", "resolved_ip", "10.0.0.5", "reason", "r", "mode", "proxy"))},
		{ForwardOpen{Forward{ConnRef: conn, Identity: id, Destination: "web:22", ResolvedIP: ResolvedIP{Addr: "10.0.0.5"}, Route: &Route{Rule: 0, Entry: "web:*"}}},
			idMap(with(cm(), "destination", "web:22", "resolved_ip", "10.0.0.5", "rule", 0, "entry", "web:*"))},
		{ForwardEnd{Forward: Forward{ConnRef: conn, Identity: id, Destination: "web:22", ResolvedIP: ResolvedIP{Addr: "10.0.0.5"}, Route: &Route{Rule: 2, Entry: "e"}},
			BytesIn: 10, BytesOut: 0, Duration: 0.25},
			idMap(with(cm(), "destination", "web:22", "resolved_ip", "10.0.0.5", "rule", 2, "entry", "e", "bytes_in", int64(10), "bytes_out", int64(0), "duration", 0.25))},
		{RequestDenied{ConnRef: conn, Request: "tcpip-forward", Reason: "no -R"}, with(cm(), "request", "tcpip-forward", "reason", "no -R")},
		{RequestDenied{ConnRef: conn, Identity: &id, Request: "channel:x11", Reason: "no"}, idMap(with(cm(), "request", "channel:x11", "reason", "no"))},
		{ProxyStart{ProxySession: ps, UpstreamSerial: 9, UpstreamKeyID: "u", TargetHostKey: "SHA256:h", HostKeyBy: "known_hosts"},
			with(psm(), "upstream_serial", uint64(9), "upstream_key_id", "u", "target_host_key", "SHA256:h", "host_key_by", "known_hosts")},
		{ProxyEnd{ProxySession: ps, Reason: "closed by client", BytesIn: 1, BytesOut: 2, Channels: 1, Duration: 3},
			with(psm(), "reason", "closed by client", "bytes_in", int64(1), "bytes_out", int64(2), "channels", 1, "duration", 3.0)},
		{ProxyRequestDenied{ProxySession: ps, Request: "channel:x11", Reason: "m"}, with(psm(), "request", "channel:x11", "reason", "m")},
		{SFTPRefused{ProxySession: ps, Channel: 0, Reason: "dup id"}, with(psm(), "channel", 0, "reason", "dup id")},
		{RecordingFailed{ProxySession: ps, Reason: "disk full", Phase: "session"}, with(psm(), "reason", "disk full", "phase", "session")},
		{SealFailed{Recording: "r", Reason: "x"}, map[string]any{"recording": "r", "reason": "x"}},
		{Reload{What: "rules", Rules: &zero}, map[string]any{"what": "rules", "rules": 0}},
		{Reload{What: "ca+krl", Result: "ok", Trigger: "file changed"}, map[string]any{"what": "ca+krl", "result": "ok", "trigger": "file changed"}},
		{Reload{What: "config", Result: "ok", ReloadChanges: &ReloadChanges{Applied: []string{}, NeedsRestart: []string{"listen"}}},
			map[string]any{"what": "config", "result": "ok", "applied": []string{}, "needs_restart": []string{"listen"}}},
		{Preauth{Source: "127.0.0.2", Connections: 1, Outcomes: map[string]int{"closed": 1}, Since: "s", Port: &port,
			Samples: []PreauthSample{{Outcome: "closed", Detail: "closed before authentication", Count: 1}}},
			map[string]any{"source": "127.0.0.2", "connections": 1, "outcomes": map[string]int{"closed": 1}, "since": "s", "port": uint16(40000),
				"samples": []map[string]any{{"outcome": "closed", "detail": "closed before authentication", "count": 1}}}},
		{Preauth{Source: "*", Connections: 7, Outcomes: map[string]int{"auth-failed": 6, "refused": 1}, Since: "s",
			AuthRefused: 6, AuthReasons: map[string]int{"untrusted-ca": 6}, AuthReasonsUncounted: 2, PenalisedUntil: "p",
			Samples: []PreauthSample{{Outcome: "auth-failed", Detail: "d <x>", Count: 6, SampleAuth: &SampleAuth{Reason: "untrusted-ca", Login: "root", Method: "publickey",
				SampleKey: &SampleKey{KeyType: "c", KeyFP: "f", SampleCert: &SampleCert{KeyID: "k", Serial: 0, CAFP: "ca"}}}},
				{Outcome: "auth-failed", Detail: "", Count: 1, SampleAuth: &SampleAuth{Reason: "protocol", Login: "", Method: "publickey"}}}},
			map[string]any{"source": "*", "connections": 7, "outcomes": map[string]int{"auth-failed": 6, "refused": 1}, "since": "s",
				"auth_refused": 6, "auth_reasons": map[string]int{"untrusted-ca": 6}, "auth_reasons_uncounted": 2, "penalised_until": "p",
				"samples": []map[string]any{
					{"outcome": "auth-failed", "detail": "d <x>", "count": 6, "reason": "untrusted-ca", "login": "root", "method": "publickey",
						"key_type": "c", "key_fp": "f", "key_id": "k", "serial": uint64(0), "ca_fp": "ca"},
					{"outcome": "auth-failed", "detail": "", "count": 1, "reason": "protocol", "login": "", "method": "publickey"}}}},
		{RecordingStart{ID: "i", User: "u", Principal: "p", KeyID: "k", Source: "s", Target: "t", TargetLogin: "l"},
			map[string]any{"id": "i", "user": "u", "principal": "p", "key_id": "k", "source": "s", "target": "t", "target_login": "l"}},
		{RecordingClose{ID: "i", Final: "f", Failed: false, Reason: "done"}, map[string]any{"id": "i", "final": "f", "failed": false, "reason": "done"}},
		{RecordingClose{ID: "i", Final: "f", Failed: true, Reason: "r", ManifestError: "m"},
			map[string]any{"id": "i", "final": "f", "failed": true, "reason": "r", "manifest_error": "m"}},
		{AuditGap{Since: "s", LostEvents: 0, Error: "e"}, map[string]any{"since": "s", "lost_events": int64(0), "error": "e"}},
		{CheckpointLine{Log: "audit", Lines: 0, Head: "h", Signed: "gatehouse-audit checkpoint v1 log=audit lines=0\n", Sig: "-----BEGIN SSH SIGNATURE-----\nx\n"},
			map[string]any{"log": "audit", "lines": int64(0), "head": "h", "signed": "gatehouse-audit checkpoint v1 log=audit lines=0\n", "sig": "-----BEGIN SSH SIGNATURE-----\nx\n"}},
		{CheckpointLine{Log: "index", Lines: 3, Head: "h", Signed: "m", Sig: "s", Interval: "10s",
			CheckpointPeer: &CheckpointPeer{Peer: "audit", PeerLines: 0, PeerHead: "p"}, CheckpointUnsealed: &CheckpointUnsealed{Unsealed: 2, Reason: "r"}},
			map[string]any{"log": "index", "lines": int64(3), "head": "h", "signed": "m", "sig": "s", "interval": "10s",
				"peer": "audit", "peer_lines": int64(0), "peer_head": "p", "unsealed": int64(2), "reason": "r"}},
	} {
		f, err := eventFields(tc.ev)
		if err != nil {
			t.Fatalf("%T: %v", tc.ev, err)
		}
		got, err := encodeFields(tc.ev.EventName(), f)
		if err != nil {
			t.Fatal(err)
		}
		if want := oldEncode(t, tc.ev.EventName(), tc.want); string(got) != want {
			t.Errorf("%T encodes as\n%s\nwant (as a map)\n%s", tc.ev, got, want)
		}
	}
}

// BenchmarkAuditLogTyped is the cost of one typed event (an accepted
// auth, the largest common line) through Log, encoding included.
func BenchmarkAuditLogTyped(b *testing.B) {
	a, err := OpenAudit(b.TempDir()+"/audit.jsonl", nil)
	if err != nil {
		b.Fatal(err)
	}
	defer a.Close()
	ev := AuthAccepted{ConnRef: ConnRef{ID: "0123456789abcdef", Source: "127.0.0.1:40000"},
		Identity: Identity{Login: "alice", Principals: []string{"alice", "ops"}, KeyID: "alice@example.org", Serial: 7, CAFP: "SHA256:ca", KeyFP: "SHA256:k"},
		Result:   "accepted", Method: "publickey", KeyType: "ssh-ed25519-cert-v01@openssh.com", ValidBefore: time.Now()}
	b.ReportAllocs()
	for b.Loop() {
		if err := a.Log(ev); err != nil {
			b.Fatal(err)
		}
	}
}
