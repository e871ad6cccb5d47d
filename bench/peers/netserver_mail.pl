#!/usr/bin/perl
# bench/peers/netserver_mail.pl: Perl's Net::Server::Mail::ESMTP (Debian
# package libnet-server-mail-perl) as a peer of mod_esmtp in bench/run
# (issue 13).
#
#   perl bench/peers/netserver_mail.pl --port PORT --mode discard|durable [--maildir DIR]
#
# How it runs: the accept loop of the module's SYNOPSIS with a fork per
# connection, the classic way to serve concurrent sessions with it (its
# process() serves one session and blocks in select() on that one socket, so
# a single process would serve the 20 sessions one after the other). The
# parent only accepts and reaps its children (waitpid, so that their CPU
# time reaches the parent's cutime/cstime, which bench/run counts).
# Accepts any sender and recipient (no callbacks for MAIL and RCPT).
# discard: the message is read and thrown away, then 250. durable: the
# message is written to DIR/tmp/NAME, fsync()ed (IO::Handle::sync: the file
# only, the directories are never fsynced, like the peers measured in
# issue 13), closed, renamed to DIR/new/NAME, then 250. The extensions of
# the SYNOPSIS are registered (8BITMIME, PIPELINING). Stops on SIGTERM.
use strict;
use warnings;

use Getopt::Long;
use IO::Handle;
use IO::Socket::INET;
use POSIX qw(WNOHANG);
use Fcntl qw(O_WRONLY O_CREAT O_EXCL);
use Sys::Hostname qw(hostname);
use Time::HiRes ();
use Net::Server::Mail::ESMTP;

my ( $host, $port, $mode, $maildir ) = ( '127.0.0.1', 0, 'discard', undef );
GetOptions(
    'host=s'    => \$host,
    'port=i'    => \$port,
    'mode=s'    => \$mode,
    'maildir=s' => \$maildir,
) or die "usage: $0 --port PORT --mode discard|durable [--maildir DIR]\n";
die "--mode discard|durable\n" unless $mode eq 'discard' or $mode eq 'durable';
die "--maildir DIR is needed in durable mode\n" if $mode eq 'durable' and not $maildir;

if ( $mode eq 'durable' ) {
    for my $d ( $maildir, map { "$maildir/$_" } qw(tmp new cur) ) {
        mkdir $d or $!{EEXIST} or die "mkdir $d: $!\n";
    }
}

( my $hostname = hostname() ) =~ s{[/:]}{_}g;
my $seq = 0;

# Maildir name: unique by the pid of the session's process and a sequence
sub maildir_name {
    my ( $s, $us ) = Time::HiRes::gettimeofday();
    return sprintf( "%d.M%dP%dQ%d.%s", $s, $us, $$, ++$seq, $hostname );
}

sub store {
    my ($dataref) = @_;
    my $name = maildir_name();
    my $tmp  = "$maildir/tmp/$name";
    sysopen( my $fh, $tmp, O_WRONLY | O_CREAT | O_EXCL, 0600 )
      or return ( 0, 451, "4.3.0 cannot create $tmp: $!" );
    binmode $fh;
    my $ok = ( print {$fh} $$dataref ) && $fh->flush && $fh->sync;    # sync = fsync(2) of the file
    my $err = $!;
    close $fh or ( $ok, $err ) = ( 0, $! );
    if ( not $ok ) {
        unlink $tmp;
        return ( 0, 451, "4.3.0 cannot write $tmp: $err" );
    }
    rename( $tmp, "$maildir/new/$name" )
      or return ( 0, 451, "4.3.0 cannot rename $tmp: $!" );
    return ( 1, 250, "2.0.0 queued as $name" );
}

sub on_data {
    my ( $session, $dataref ) = @_;
    return store($dataref) if $mode eq 'durable';
    return ( 1, 250, '2.0.0 discarded' );
}

sub session {
    my ($conn) = @_;
    my $esmtp = Net::Server::Mail::ESMTP->new( socket => $conn );
    $esmtp->register('Net::Server::Mail::ESMTP::8BITMIME');
    $esmtp->register('Net::Server::Mail::ESMTP::PIPELINING');
    $esmtp->set_callback( DATA => \&on_data );
    $esmtp->process();
    $conn->close();
}

my $listen = IO::Socket::INET->new(
    LocalAddr => $host,
    LocalPort => $port,
    Proto     => 'tcp',
    Listen    => 128,
    ReuseAddr => 1,
) or die "listen on $host:$port: $@\n";

$SIG{CHLD} = sub {
    local ( $!, $? );
    1 while waitpid( -1, WNOHANG ) > 0;
};
$SIG{TERM} = sub { exit 0 };
$SIG{PIPE} = 'IGNORE';
STDOUT->autoflush(1);
print "listening ", $listen->sockport, "\n";

while (1) {
    my $conn = $listen->accept;
    if ( not $conn ) {
        next if $!{EINTR} or $!{ECONNABORTED};
        die "accept: $!\n";
    }
    my $pid = fork;
    if ( not defined $pid ) {
        warn "fork: $!\n";
        $conn->close;
        next;
    }
    if ( $pid == 0 ) {
        $SIG{CHLD} = 'DEFAULT';
        $SIG{TERM} = 'DEFAULT';
        close $listen;
        session($conn);
        POSIX::_exit(0);
    }
    $conn->close;
}
