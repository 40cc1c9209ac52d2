//! Reading back what a timely test dataflow captured with `capture_into(channel)`: the records
//! in the order they were published, each with the (least) epoch it carried.
#![allow(dead_code)]

use std::sync::mpsc::Receiver;

use timely::dataflow::operators::capture::Event;

/// Every captured record with its epoch, in publication order.
pub fn captured_at<D>(recv: &Receiver<Event<u64, Vec<D>>>) -> Vec<(u64, D)> {
    recv.try_iter()
        .flat_map(|event| match event {
            Event::Messages(stamp, batch) => {
                let epoch = *stamp.least().expect("captured records carry their epoch");
                batch.into_iter().map(|d| (epoch, d)).collect()
            }
            Event::Progress(_) => Vec::new(),
        })
        .collect()
}

/// Every captured record, in publication order.
pub fn captured<D>(recv: &Receiver<Event<u64, Vec<D>>>) -> Vec<D> {
    captured_at(recv).into_iter().map(|(_, d)| d).collect()
}
