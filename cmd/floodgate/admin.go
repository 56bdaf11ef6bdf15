package main

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/floodgate/floodgate/admin"
)

// defaultAdminAddr is where the admin API listens when a token is set:
// loopback only, unless --admin says otherwise.
const defaultAdminAddr = "127.0.0.1:8082"

// minTokenLen is the shortest admin token accepted.
const minTokenLen = 16

// adminConfig is what the admin flags set.
type adminConfig struct {
	addr      string
	token     string
	tokenFile string
}

// adminFlags defines --admin, --admin-token and --admin-token-file on fs.
func adminFlags(cfg *adminConfig, fs *flag.FlagSet) {
	fs.StringVar(&cfg.addr, "admin", defaultAdminAddr, "listen `address` of the admin API (inspect and reset keys, rules, audit log), served only when a token is set; empty disables it")
	fs.StringVar(&cfg.token, "admin-token", "", "bearer `token` of the admin API, at least 16 characters; prefer FLOODGATE_ADMIN_TOKEN or --admin-token-file, since a flag shows in the process list")
	fs.StringVar(&cfg.tokenFile, "admin-token-file", "", "`file` holding the admin API's bearer token (surrounding white space is ignored); wins over --admin-token")
}

// resolve returns the admin token, "" when none is set (the API is then
// off), or an error for a bad one. A token file wins over a token given
// directly (flag or FLOODGATE_ADMIN_TOKEN); white space around the token is
// ignored either way.
func (c adminConfig) resolve() (string, error) {
	tok := strings.TrimSpace(c.token)
	if c.tokenFile != "" {
		b, err := os.ReadFile(c.tokenFile)
		if err != nil {
			return "", fmt.Errorf("--admin-token-file: %w", err)
		}
		if tok = strings.TrimSpace(string(b)); tok == "" {
			return "", fmt.Errorf("--admin-token-file %s: empty", c.tokenFile)
		}
	}
	if tok != "" && len(tok) < minTokenLen {
		return "", fmt.Errorf("admin token of %d characters: want at least %d", len(tok), minTokenLen)
	}
	if strings.ContainsAny(tok, " \t\r\n") {
		return "", errors.New("admin token: white space inside")
	}
	return tok, nil
}

// check validates the flags: a token that cannot be read or is too short
// stops the command before it serves.
func (c adminConfig) check() error {
	_, err := c.resolve()
	return err
}

// listenAdmin listens for the admin API over the stack's engine and
// overrides, or returns nil when no
// token or no address is set (logged at info). An address beyond loopback
// is logged as a warning.
func listenAdmin(cfg adminConfig, stk *stack, logger *slog.Logger) (*sideServer, error) {
	tok, err := cfg.resolve()
	if err != nil {
		return nil, err
	}
	if cfg.addr == "" {
		return nil, nil
	}
	if tok == "" {
		logger.Info("admin API off: no token (set FLOODGATE_ADMIN_TOKEN or --admin-token-file)")
		return nil, nil
	}
	opts := admin.Options{Token: tok, Logger: logger, Overrides: stk.overrides, Gatherer: stk.mx.Registry(), Instance: instanceName()}
	if sa, ok := stk.base.(admin.SharedAudit); ok {
		opts.SharedAudit = sa
	}
	h, err := admin.New(stk.engine, opts)
	if err != nil {
		return nil, err
	}
	srv, err := listenSide("admin", cfg.addr, h, logger)
	if err != nil {
		return nil, err
	}
	if !loopback(srv.ln.Addr()) {
		logger.Warn("admin API listening beyond loopback", "addr", srv.ln.Addr().String())
	}
	return srv, nil
}

// closingFirst returns closeStore preceded by closing srv (nil: nothing):
// the admin API stops before the store closes, so that a reset never
// reaches a closed store.
func closingFirst(srv *sideServer, closeStore func() int) func() int {
	return func() int {
		srv.close()
		return closeStore()
	}
}

// instanceName names this process in audit entries: host name and pid.
func instanceName() string {
	host, err := os.Hostname()
	if err != nil {
		host = "unknown"
	}
	return fmt.Sprintf("%s:%d", host, os.Getpid())
}

// loopback reports whether a is a loopback address.
func loopback(a net.Addr) bool {
	ap, err := netip.ParseAddrPort(a.String())
	return err == nil && ap.Addr().IsLoopback()
}
