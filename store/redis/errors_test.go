package redis

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/floodgate/floodgate"
)

// TestRefused sorts servers' answers: those that say FCALL or FUNCTION
// cannot be used (the store then uses EVALSHA) and the others.
func TestRefused(t *testing.T) {
	for _, c := range []struct {
		msg  string
		want bool
	}{
		{"ERR unknown command `fcall`, with args beginning with: `floodgate_decide_x`, `1`, ", true},  // Redis 6.2
		{"ERR unknown command 'FUNCTION', with args beginning with: 'LOAD' ", true},                   // Redis 6.0
		{"NOPERM this user has no permissions to run the 'fcall' command", true},                      // Redis 7 ACL
		{"NOPERM this user has no permissions to run the 'function|load' command", true},              // Redis 7 ACL
		{"ERR unsupported command 'fcall'", true},                                                     // a proxy
		{"NOPERM this user has no permissions to access one of the keys used as arguments", false},    // a key
		{"ERR Function not found", false},                                                             // load it
		{"NOSCRIPT No matching script. Please use EVAL.", false},                                      // EVALSHA's
		{"OOM command not allowed when used memory > 'maxmemory'.", false},                            // the call's own
		{"ERR unknown command 'hello'", false},                                                        // another command
		{"ERR Unknown command called from script script: 3 on @user_function:12.", false},             // raised in the function
		{"ERR Unknown Redis command called from script script: ... @user_function: 66", false},        // raised in the function
		{"ERR The user executing the script can't run this command or subcommand script: ...", false}, // raised in the function
		{"NOPERM this user has no permissions to run the 'function|load' command in a script", false}, // raised in a script
	} {
		if got := refused(errors.New(c.msg)); got != c.want {
			t.Errorf("refused(%q) = %v, want %v", c.msg, got, c.want)
		}
	}
	if refused(nil) {
		t.Error("refused(nil) = true")
	}
}

// TestOldServerHint: an op that failed with a syntax error, as SET ... GET
// does before Redis 6.2, says which version the store needs.
func TestOldServerHint(t *testing.T) {
	msg := "ERR syntax error"
	reply := string([]byte{recordFailed, byte(len(msg)), 0, 0, 0}) + msg
	op := floodgate.Op{Key: "k", Limits: []floodgate.Limit{{Algorithm: floodgate.GCRA, Quota: 1, Window: time.Second}}, Cost: 1}
	rest, err := decode(&op, reply)
	if err != nil || rest != "" {
		t.Fatalf("decode: rest %q, %v", rest, err)
	}
	if op.Err == nil || !strings.Contains(op.Err.Error(), "Redis 6.2 or later") {
		t.Fatalf("op error %v, want the Redis version named", op.Err)
	}
}
