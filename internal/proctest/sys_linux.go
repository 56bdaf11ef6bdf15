package proctest

import "syscall"

// DieWithParent returns process attributes that make the kernel kill the
// process if the test binary dies, so that a crashed or timed-out test
// leaves no server behind. internal/redistest uses it too.
func DieWithParent() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
