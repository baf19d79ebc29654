package record

// rawEvent is an event given as a map, for tests of the log itself
// (chain, checkpoints, failures) where the fields do not matter.
type rawEvent struct {
	name   string
	fields map[string]any
}

func (e rawEvent) EventName() string { return e.name }

func (e rawEvent) MarshalJSON() ([]byte, error) { return marshalNoEscape(e.fields) }

// logMap logs an event given as a map.
func (a *Audit) logMap(name string, fields map[string]any) error {
	return a.Log(rawEvent{name, fields})
}
