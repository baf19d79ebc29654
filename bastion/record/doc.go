// Package record writes and verifies the bastion's tamper-evident evidence:
// the hash-chained audit log (Audit, VerifyAudit), whose events are typed
// Go values (Event and the types in events.go, which the bastion's
// observers — metrics, the status page — switch on), and the per-connection
// session recordings (Recording, Verify), whose manifest chains the SHA-256
// of every flushed chunk and is signed in OpenSSH's SSHSIG format so that
// anyone can check it with `ssh-keygen -Y verify`, without gatehouse.
//
// A recording directory holds meta.json, events.jsonl, per channel
// chNN.cast (asciicast v2, playable by asciinema 2.x) and chNN.ttyrec
// (byte-exact output), then manifest.json and manifest.json.sig once
// closed. An optional hash-chained index.jsonl in the recordings root
// (RecorderConfig.Index, VerifyAll) reveals recordings deleted as a whole.
// Signed checkpoint lines in both logs (Audit.EnableCheckpoints, namespace
// AuditNamespace) reveal lines cut from their end and logs rewritten
// without the key; VerifyEvidence checks the whole body of evidence.
// Every write failure is sticky and returned to the caller, which
// ends the session: the bastion fails closed rather than run unrecorded.
package record
