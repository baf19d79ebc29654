package store

// SetTestHook makes Commit and Collect call f at their stages ("commit
// linked", "commit renamed", "gc hidden", "gc pruned") and stop there, as if killed,
// when it returns an error. The returned function restores the default.
func SetTestHook(f func(stage string) error) (restore func()) {
	old := testHookFn
	testHookFn = f
	return func() { testHookFn = old }
}
