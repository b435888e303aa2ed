//! At most N jobs at a time, across every process that runs this program.
//!
//! ```text
//! cargo run --example semaphore -- [SLOTS] [JOBS]
//! ```
//!
//! Run it in several terminals at once: together they never run more than
//! SLOTS jobs, and a process killed mid-job gives its slot back at once.

use std::time::Duration;

use wasmlock::Semaphore;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let slots: usize = args.next().map_or(Ok(2), |s| s.parse())?;
    let jobs: usize = args.next().map_or(Ok(6), |s| s.parse())?;
    let dir = std::env::temp_dir().join("wasmlock-semaphore-example");
    let sem = Semaphore::new(&dir, "jobs", slots)?;
    std::thread::scope(|s| {
        for job in 0..jobs {
            let sem = &sem;
            s.spawn(move || -> Result<(), wasmlock::Error> {
                let permit = sem.acquire()?;
                println!("job {job}: running in slot {}", permit.slot());
                std::thread::sleep(Duration::from_millis(300));
                println!("job {job}: done");
                Ok(())
            });
        }
    });
    println!(
        "all {jobs} jobs ran, at most {slots} at a time ({})",
        dir.display()
    );
    Ok(())
}
