// Command floodgate runs the floodgate rate limiter and its tools.
//
// Usage:
//
//	floodgate <command> [flags]
//
// Run "floodgate help" for the list of commands and "floodgate <command> -h"
// for a command's flags. Every command's flags can also be set from
// environment variables named FLOODGATE_<FLAG> (upper case, dashes as
// underscores: --log-level is FLOODGATE_LOG_LEVEL); a flag given on the
// command line wins over its environment variable.
//
// Exit codes: 0 success, 1 failure, 2 bad usage.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
)

// command is one subcommand of the floodgate binary.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) int
}

// commands holds the registered subcommands by name. It is written only by
// register, from init functions, before main runs.
var commands = map[string]command{}

// register adds a subcommand. Each subcommand's file calls it from its init
// function, so adding a command never touches this file. run gets the
// arguments after the command name and returns the process exit code; ctx is
// cancelled on SIGINT or SIGTERM. Registering the same name twice, or the
// reserved name "help", is a programming error and panics at start-up.
func register(name, summary string, run func(ctx context.Context, args []string, stdout, stderr io.Writer) int) {
	if name == "" || name == "help" || strings.HasPrefix(name, "-") {
		panic(fmt.Sprintf("floodgate: cannot register command %q", name))
	}
	if _, dup := commands[name]; dup {
		panic(fmt.Sprintf("floodgate: command %q registered twice", name))
	}
	commands[name] = command{name: name, summary: summary, run: run}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		// After the first signal, restore the default behaviour so that a
		// second one stops the process at once.
		<-ctx.Done()
		stop()
	}()
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run dispatches args to a subcommand and returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	name, rest := args[0], args[1:]
	switch name {
	case "help", "-h", "-help", "--help":
		if len(rest) > 0 {
			if c, ok := commands[rest[0]]; ok {
				return c.run(ctx, []string{"-h"}, stdout, stderr)
			}
			fmt.Fprintf(stderr, "floodgate: unknown command %q\n\n", rest[0])
			usage(stderr)
			return 2
		}
		usage(stdout)
		return 0
	}
	c, ok := commands[name]
	if !ok {
		fmt.Fprintf(stderr, "floodgate: unknown command %q\n\n", name)
		usage(stderr)
		return 2
	}
	return c.run(ctx, rest, stdout, stderr)
}

// usage prints the list of commands.
func usage(w io.Writer) {
	names := make([]string, 0, len(commands))
	width := 0
	for name := range commands {
		names = append(names, name)
		width = max(width, len(name))
	}
	sort.Strings(names)
	fmt.Fprintf(w, "floodgate is a distributed rate limiter.\n\nUsage:\n\n\tfloodgate <command> [flags]\n\nCommands:\n\n")
	for _, name := range names {
		fmt.Fprintf(w, "\t%-*s  %s\n", width, name, commands[name].summary)
	}
	fmt.Fprintf(w, "\nRun \"floodgate help <command>\" or \"floodgate <command> -h\" for a command's flags.\n")
	fmt.Fprintf(w, "Every flag can also be set from FLOODGATE_<FLAG> (e.g. --log-level: FLOODGATE_LOG_LEVEL); the flag wins.\n")
}

// envName returns the environment variable that sets flag name:
// "log-level" → "FLOODGATE_LOG_LEVEL".
func envName(name string) string {
	return "FLOODGATE_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// parseFlags parses args into fs after setting every flag that has an
// environment variable (see [envName]) from it, so that flags given in args
// win over the environment. lookup is os.LookupEnv outside tests. The flag
// set should use flag.ContinueOnError; parseFlags returns flag.ErrHelp for
// -h.
func parseFlags(fs *flag.FlagSet, args []string, lookup func(string) (string, bool)) error {
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if err != nil {
			return
		}
		env := envName(f.Name)
		if v, ok := lookup(env); ok {
			if e := f.Value.Set(v); e != nil {
				err = fmt.Errorf("%s=%q: %w", env, v, e)
			}
		}
	})
	if err != nil {
		fmt.Fprintf(fs.Output(), "floodgate %s: %v\n", fs.Name(), err)
		return err
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		err := fmt.Errorf("unexpected arguments %q", fs.Args())
		fmt.Fprintf(fs.Output(), "floodgate %s: %v\n", fs.Name(), err)
		return err
	}
	return nil
}

// flagsExit maps an error from [parseFlags] to an exit code: 0 for -h, 2 for
// bad usage.
func flagsExit(err error) int {
	if err == flag.ErrHelp {
		return 0
	}
	return 2
}
