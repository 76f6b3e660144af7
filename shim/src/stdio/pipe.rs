//! Non-blocking pipes, FIFOs and pty masters driven by the tokio reactor.
//!
//! tokio's own `pipe` types refuse a pty master, so one small wrapper over `AsyncFd`
//! serves all three.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{fcntl, open, FcntlArg, OFlag};
use nix::sys::stat::Mode;
use tokio::io::unix::AsyncFd;

#[derive(Debug)]
pub struct AsyncPipe {
    fd: AsyncFd<OwnedFd>,
}

impl AsyncPipe {
    pub fn new(fd: OwnedFd) -> std::io::Result<Self> {
        let flags = OFlag::from_bits_retain(fcntl(&fd, FcntlArg::F_GETFL)?);
        fcntl(&fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
        Ok(AsyncPipe {
            fd: crate::sys::register_async(fd)?,
        })
    }

    /// Opens a FIFO to write to it without ever blocking on a missing reader.
    ///
    /// On Linux a FIFO opened O_RDWR never blocks and never raises SIGPIPE/EPIPE, because
    /// the opener is itself a reader (fifo(7)); containerd keeps a reader open for the
    /// same reason. Writes stall (asynchronously) once the pipe buffer is full.
    pub fn open_fifo_writer(path: &Path) -> std::io::Result<Self> {
        let flags = OFlag::O_RDWR | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC | OFlag::O_NOCTTY;
        Self::new(open(path, flags, Mode::empty())?)
    }

    /// Opens a process's stdin FIFO to read from it, holding a writer of our own.
    ///
    /// O_RDWR never blocks for a missing writer (fifo(7)) and, since the shim itself is a
    /// writer, the reader never sees every writer gone: the client that feeds the FIFO
    /// (the engine, ctr) may go away and come back (an engine restart, detach and attach)
    /// without the process reading EOF. Its end of input comes from CloseIO only, which is
    /// how containerd's clients end stdin (ctr's stdin closer, dockerd's StdinOnce).
    pub fn open_fifo_reader(path: &Path) -> std::io::Result<Self> {
        let flags = OFlag::O_RDWR | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC | OFlag::O_NOCTTY;
        Self::new(open(path, flags, Mode::empty())?)
    }

    /// Reads some bytes; `Ok(0)` at end of stream. A pty master reports the slave side's
    /// last close as EIO, which is its end of stream too.
    pub async fn read(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|fd| {
                nix::unistd::read(fd.get_ref().as_fd(), buf).map_err(std::io::Error::from)
            }) {
                Ok(Ok(n)) => return Ok(n),
                Ok(Err(e)) if e.raw_os_error() == Some(Errno::EIO as i32) => return Ok(0),
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }

    /// Waits until a read would not block (data, end of stream or an error), reading
    /// nothing.
    pub async fn readable(&self) -> std::io::Result<()> {
        self.fd.readable().await.map(drop)
    }

    /// Reads what is available now without waiting; `Ok(0)` at end of stream or when
    /// nothing is buffered.
    pub fn read_now(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        match nix::unistd::read(self.fd.get_ref().as_fd(), buf) {
            Ok(n) => Ok(n),
            Err(Errno::EAGAIN) | Err(Errno::EIO) => Ok(0),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn write_all(&self, mut buf: &[u8]) -> std::io::Result<()> {
        while !buf.is_empty() {
            let mut guard = self.fd.writable().await?;
            match guard
                .try_io(|fd| nix::unistd::write(fd.get_ref(), buf).map_err(std::io::Error::from))
            {
                Ok(Ok(n)) => buf = &buf[n..],
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }

    pub fn raw_fd(&self) -> i32 {
        self.fd.get_ref().as_raw_fd()
    }
}
