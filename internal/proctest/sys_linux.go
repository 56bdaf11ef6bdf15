package proctest

import "syscall"

// sysProcAttr makes the kernel kill the process if the test binary dies, so
// a crashed or timed-out test leaves no server behind.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
