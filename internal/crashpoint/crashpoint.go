// Package crashpoint marks the steps of a refresh where the crash tests
// kill the daemon. Only a binary built with -tags crashtest can crash
// there (TOKENBROKER_TEST_CRASH_AT names the step); in any other build At
// does nothing and Arm refuses a step, so a release binary has no way to
// kill itself mid-refresh.
package crashpoint

// Steps of a refresh, in order.
const (
	BeforeRequest = "before-request" // the lock is held; nothing is spent yet
	AfterAnswer   = "after-answer"   // the provider answered; nothing is written yet
	BetweenStores = "between-stores" // fleet store: Redis written, the local copy not yet
	AfterSave     = "after-save"     // the new token is durable; not handed out yet
)
