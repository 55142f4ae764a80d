// Package policy owns roomchat's configuration file (SPEC §9–§10): the
// [defaults] table, one [namespace.NAME] table per namespace, and the
// [auth] table. It decodes the file strictly (an unknown key, a bad value
// or a bad type is one error naming the file, line and key), lets each
// namespace inherit [defaults] field by field over the built-in layer that
// flags set, and answers the questions the registry and the server ask as
// plain values: which policy governs a room, may this role join or post,
// are typing and custom events allowed. It knows nothing of sockets, Redis
// or tokens; package identity verifies tokens and gives roles.
//
// Reload (SIGHUP) is a Source swap: the next action of every connection
// asks the new Config.
package policy
