package rules

import (
	"fmt"
	"strings"
)

// Error is one problem in a configuration file.
type Error struct {
	// Pos is where the problem is (file:line:col); the line and column may
	// be zero when the problem concerns the whole file.
	Pos Position
	// Field is the path of the offending field from the top of the file, such
	// as "descriptors[0].rate_limit.unit"; empty for the whole file.
	Field string
	// Msg says what is wrong, in plain words.
	Msg string
}

// Error formats the error as "file:line:col: field: message".
func (e *Error) Error() string {
	if e.Field == "" {
		return fmt.Sprintf("%v: %s", e.Pos, e.Msg)
	}
	return fmt.Sprintf("%v: %s: %s", e.Pos, e.Field, e.Msg)
}

// Errors is every problem found while loading a configuration, in file
// order. [Parse] and [Load] return it as their error (use errors.As); it is
// never empty when returned.
type Errors []*Error

// Error lists the errors one per line.
func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}
