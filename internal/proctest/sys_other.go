//go:build !linux

package proctest

import "syscall"

// DieWithParent returns nil here: only Linux offers a parent-death signal.
func DieWithParent() *syscall.SysProcAttr { return nil }
