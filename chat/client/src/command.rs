//! The commands people and scripts type: `/who`, `/msg bob hi`, `/join lobby`, …

use chat_api::{Access, excerpt};

/// What `/help` shows.
pub const HELP: &str = "\
commands:
  /who                      who is online
  /whois <name|uuid>        one user's details
  /msg <name|uuid> <text>   a direct message (peer to peer, else relayed, else stored)
  /join <room>              join an open room (made if needed) or a group you were invited to
  /create <room>            make an open room, owned by you
  /group <room>             make an invite-only room (a group), owned by you
  /invite <room> <user>     invite a user to a room you are in
  /add <room> <user>        add a user to a room you own
  /remove <room> <user>     remove a member from a room you own
  /leave <room>             leave a room for good
  /rooms                    the open rooms and yours, with how many members each has
  /myrooms                  the rooms you own, are in, or are invited to
  /members <room>           a room's members
  /say <room> <text>        post in a room
  <text>                    post in the current room (the last one joined)
  /history <room>           a room's last posts
  /friend <user>            ask a user to be friends (or accept their request)
  /accept <user>            accept a friend request
  /unfriend <user>          end a friendship, withdraw or decline a request
  /friends                  your friends and requests, and who of them is online
  /status                   this client's state, id and addresses
  /nat [<name|uuid>]        your NAT's behaviour and public address (STUN), or a user's
  /send <name|uuid> <path>  send a file: peer to peer, else through the server (which holds
                            it for an offline user); resumable, hash-checked
  /connect <name|uuid>      open a direct path to a user (punching through NATs) and say which
  /paths                    how each peer was last reached (direct or relayed), and why
  /help                     this help
  /quit                     leave the server and exit
a line starting with // posts the text after the first slash
on a terminal, Ctrl-R redraws what you were typing if an incoming line cleared it";

/// One parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Command {
    /// `/who`: everyone online.
    Who,
    /// `/whois <user>`: one user's details.
    Whois(String),
    /// `/msg <user> <text>`: a direct message.
    Msg {
        /// The recipient, by name or id.
        to: String,
        /// The text.
        text: String,
    },
    /// `/join <room>`.
    Join(String),
    /// `/leave <room>`.
    Leave(String),
    /// `/rooms`.
    Rooms,
    /// `/myrooms`.
    MyRooms,
    /// `/create <room>` (open) or `/group <room>` (invite-only).
    Create {
        /// The room.
        room: String,
        /// Who may join.
        access: Access,
    },
    /// `/invite <room> <user>`.
    Invite {
        /// The room.
        room: String,
        /// The user, by name or id.
        user: String,
    },
    /// `/add <room> <user>`.
    Add {
        /// The room.
        room: String,
        /// The user, by name or id.
        user: String,
    },
    /// `/remove <room> <user>`.
    Remove {
        /// The room.
        room: String,
        /// The member, by name or id.
        user: String,
    },
    /// `/friend <user>`.
    Friend(String),
    /// `/accept <user>`.
    Accept(String),
    /// `/unfriend <user>`.
    Unfriend(String),
    /// `/friends`.
    Friends,
    /// `/members <room>`.
    Members(String),
    /// `/say <room> <text>`, or plain text for the current room (`room` is `None`).
    Say {
        /// The room, or `None` for the current one.
        room: Option<String>,
        /// The text.
        text: String,
    },
    /// `/history <room>`.
    History(String),
    /// `/status`.
    Status,
    /// `/nat`, or `/nat <user>` for what a user reported.
    Nat(Option<String>),
    /// `/connect <user>`: open a direct path to a user, and say how messages to them go.
    Connect(String),
    /// `/paths`: how each peer was last reached.
    Paths,
    /// `/send <user> <path>`: a file, peer to peer or through the server.
    Send {
        /// The recipient, by name or id.
        to: String,
        /// The file.
        path: String,
    },
    /// `/help`.
    Help,
    /// `/quit`.
    Quit,
}

impl Command {
    /// Parses one line: `Ok(None)` for a blank line, `Err` with a message saying what is wrong
    /// (and how to get help) for a bad one.
    pub fn parse(line: &str) -> Result<Option<Command>, String> {
        let line = line.trim_end_matches(['\r', '\n']);
        if line.trim().is_empty() {
            return Ok(None);
        }
        let Some(rest) = line.trim_start().strip_prefix('/') else {
            return Ok(Some(Command::Say {
                room: None,
                text: line.to_owned(),
            }));
        };
        if rest.starts_with('/') {
            return Ok(Some(Command::Say {
                room: None,
                text: rest.to_owned(),
            }));
        }
        let (word, args) = match rest.split_once(char::is_whitespace) {
            Some((word, args)) => (word, args.trim()),
            None => (rest, ""),
        };
        let command = match word {
            "who" | "online" => no_args(word, args, Command::Who)?,
            "rooms" => no_args(word, args, Command::Rooms)?,
            "myrooms" => no_args(word, args, Command::MyRooms)?,
            "friends" => no_args(word, args, Command::Friends)?,
            "create" => Command::Create {
                room: one_arg(word, args, "<room>")?,
                access: Access::Open,
            },
            "group" => Command::Create {
                room: one_arg(word, args, "<room>")?,
                access: Access::InviteOnly,
            },
            "invite" => {
                let (room, user) = pair(word, args, "<room> <name|uuid>")?;
                Command::Invite { room, user }
            }
            "add" => {
                let (room, user) = pair(word, args, "<room> <name|uuid>")?;
                Command::Add { room, user }
            }
            "remove" | "kick" => {
                let (room, user) = pair(word, args, "<room> <name|uuid>")?;
                Command::Remove { room, user }
            }
            "friend" => Command::Friend(one_arg(word, args, "<name|uuid>")?),
            "accept" => Command::Accept(one_arg(word, args, "<name|uuid>")?),
            "unfriend" => Command::Unfriend(one_arg(word, args, "<name|uuid>")?),
            "status" => no_args(word, args, Command::Status)?,
            "nat" if args.is_empty() => Command::Nat(None),
            "nat" => Command::Nat(Some(one_arg(word, args, "[<name|uuid>]")?)),
            "connect" => Command::Connect(one_arg(word, args, "<name|uuid>")?),
            "paths" => no_args(word, args, Command::Paths)?,
            "send" => {
                let (to, path) = two_args(word, args, "<name|uuid> <path>")?;
                Command::Send { to, path }
            }
            "help" | "?" => Command::Help,
            "quit" | "exit" => Command::Quit,
            "whois" | "lookup" => Command::Whois(one_arg(word, args, "<name|uuid>")?),
            "join" => Command::Join(one_arg(word, args, "<room>")?),
            "leave" | "part" => Command::Leave(one_arg(word, args, "<room>")?),
            "history" => Command::History(one_arg(word, args, "<room>")?),
            "members" => Command::Members(one_arg(word, args, "<room>")?),
            "msg" | "m" => {
                let (to, text) = two_args(word, args, "<name|uuid> <text>")?;
                Command::Msg { to, text }
            }
            "say" => {
                let (room, text) = two_args(word, args, "<room> <text>")?;
                Command::Say {
                    room: Some(room),
                    text,
                }
            }
            other => {
                return Err(format!(
                    "unknown command /{}; /help lists the commands",
                    excerpt(other)
                ));
            }
        };
        Ok(Some(command))
    }
}

fn no_args(word: &str, args: &str, command: Command) -> Result<Command, String> {
    if args.is_empty() {
        Ok(command)
    } else {
        Err(format!("/{word} takes no arguments"))
    }
}

fn one_arg(word: &str, args: &str, usage: &str) -> Result<String, String> {
    if args.is_empty() || args.contains(char::is_whitespace) {
        return Err(format!("usage: /{word} {usage}"));
    }
    Ok(args.to_owned())
}

/// Two arguments of one word each.
fn pair(word: &str, args: &str, usage: &str) -> Result<(String, String), String> {
    match two_args(word, args, usage)? {
        (first, second) if !second.contains(char::is_whitespace) => Ok((first, second)),
        _ => Err(format!("usage: /{word} {usage}")),
    }
}

fn two_args(word: &str, args: &str, usage: &str) -> Result<(String, String), String> {
    match args.split_once(char::is_whitespace) {
        Some((first, rest)) if !rest.trim().is_empty() => {
            Ok((first.to_owned(), rest.trim_start().to_owned()))
        }
        _ => Err(format!("usage: /{word} {usage}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Command {
        Command::parse(line).unwrap().unwrap()
    }

    #[test]
    fn commands_parse_with_their_arguments() {
        assert_eq!(parse("/who"), Command::Who);
        assert_eq!(
            parse("/msg bob  hello there "),
            Command::Msg {
                to: "bob".into(),
                text: "hello there".into()
            }
        );
        assert_eq!(parse("/join lobby"), Command::Join("lobby".into()));
        assert_eq!(parse("/leave lobby\n"), Command::Leave("lobby".into()));
        assert_eq!(parse("/rooms"), Command::Rooms);
        assert_eq!(
            parse("/say lobby hi all"),
            Command::Say {
                room: Some("lobby".into()),
                text: "hi all".into()
            }
        );
        assert_eq!(parse("/history lobby"), Command::History("lobby".into()));
        assert_eq!(parse("/members lobby"), Command::Members("lobby".into()));
        assert_eq!(parse("/whois 42"), Command::Whois("42".into()));
        assert_eq!(parse("/help"), Command::Help);
        assert_eq!(parse("/quit"), Command::Quit);
        assert_eq!(parse("/status"), Command::Status);
        assert_eq!(parse("/nat"), Command::Nat(None));
        assert_eq!(parse("/nat bob"), Command::Nat(Some("bob".into())));
        assert_eq!(parse("/connect bob"), Command::Connect("bob".into()));
        assert_eq!(parse("/paths"), Command::Paths);
        assert_eq!(
            parse("/send bob ./my notes.txt"),
            Command::Send {
                to: "bob".into(),
                path: "./my notes.txt".into()
            }
        );
        assert!(Command::parse("/send bob").unwrap_err().contains("<path>"));
        assert!(
            Command::parse("/connect")
                .unwrap_err()
                .contains("<name|uuid>")
        );
        assert!(Command::parse("/paths bob").is_err());
        assert_eq!(parse("/myrooms"), Command::MyRooms);
        assert_eq!(
            parse("/group team"),
            Command::Create {
                room: "team".into(),
                access: Access::InviteOnly
            }
        );
        assert_eq!(
            parse("/create lobby"),
            Command::Create {
                room: "lobby".into(),
                access: Access::Open
            }
        );
        assert_eq!(
            parse("/invite team bob"),
            Command::Invite {
                room: "team".into(),
                user: "bob".into()
            }
        );
        assert_eq!(
            parse("/kick team bob"),
            Command::Remove {
                room: "team".into(),
                user: "bob".into()
            }
        );
        assert_eq!(parse("/friend bob"), Command::Friend("bob".into()));
        assert_eq!(parse("/accept bob"), Command::Accept("bob".into()));
        assert_eq!(parse("/unfriend bob"), Command::Unfriend("bob".into()));
        assert_eq!(parse("/friends"), Command::Friends);
        assert_eq!(
            Command::parse("/invite team bob carol"),
            Err("usage: /invite <room> <name|uuid>".into())
        );
    }

    #[test]
    fn plain_text_goes_to_the_current_room() {
        assert_eq!(
            parse("hello"),
            Command::Say {
                room: None,
                text: "hello".into()
            }
        );
        assert_eq!(
            parse("//who is there"),
            Command::Say {
                room: None,
                text: "/who is there".into()
            }
        );
        assert_eq!(Command::parse("   \n"), Ok(None));
    }

    #[test]
    fn bad_lines_say_what_is_wrong() {
        assert_eq!(
            Command::parse("/msg bob"),
            Err("usage: /msg <name|uuid> <text>".into())
        );
        assert_eq!(Command::parse("/join"), Err("usage: /join <room>".into()));
        assert_eq!(
            Command::parse("/join a b"),
            Err("usage: /join <room>".into())
        );
        assert_eq!(
            Command::parse("/who me"),
            Err("/who takes no arguments".into())
        );
        assert!(Command::parse("/dance").unwrap_err().contains("/help"));
        let flood = format!("/{}", "x".repeat(1 << 20));
        let refused = Command::parse(&flood).unwrap_err();
        assert!(refused.len() < 200, "{} bytes", refused.len());
    }
}
