package redistest

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestServerDiesWithTestBinary runs this test again as a child test binary
// that starts a server, prints its pid and waits; the child is then killed
// without any cleanup, as a test timeout or a crash would, and the server
// must be gone soon after.
func TestServerDiesWithTestBinary(t *testing.T) {
	if os.Getenv("REDISTEST_ORPHAN_CHILD") == "1" {
		s := StartServer(t)
		fmt.Printf("pid %d\n", s.Pid())
		time.Sleep(time.Minute) // killed long before
		return
	}
	if runtime.GOOS != "linux" {
		t.Skip("the parent-death signal is Linux only")
	}
	need(t)
	child := exec.Command(os.Args[0], "-test.run", "^TestServerDiesWithTestBinary$", "-test.count", "1")
	child.Env = append(os.Environ(), "REDISTEST_ORPHAN_CHILD=1")
	out, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer child.Process.Kill()
	pid := 0
	sc := bufio.NewScanner(out)
	for pid == 0 && sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "pid "); ok {
			pid, _ = strconv.Atoi(rest)
		}
	}
	if pid == 0 {
		t.Fatalf("the child printed no server pid (scan: %v)", sc.Err())
	}
	if !alive(pid) {
		t.Fatalf("server %d not running while the child is", pid)
	}
	if err := child.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = child.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("server %d still running 10s after its test binary was killed", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// alive reports whether process pid exists and is not a zombie (an orphan
// whose new parent has not reaped it yet has exited all the same).
func alive(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command name, which is in parentheses.
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] != 'Z' && s[i+2] != 'X'
}
