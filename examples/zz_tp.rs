use bytes::BytesMut;
fn main() {
    let mode = std::env::args().nth(1).unwrap();
    let size: usize = std::env::args().nth(2).unwrap().parse().unwrap();
    let n = 100_000;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let payload = vec![3u8; size];
    rt.block_on(async {
        #[allow(unused_mut)]
        let (mut a, mut b) = tokio_imc::ConnectedSocket::pair().unwrap();
        let t = std::time::Instant::now();
        if mode == "imc" {
            let send = async {
                for _ in 0..n {
                    a.send(&payload, &[]).await.unwrap();
                }
            };
            let recv = async {
                let mut d = BytesMut::with_capacity(tokio_imc::MAX_RECV_SIZE);
                let mut f = Vec::new();
                for _ in 0..n {
                    d.clear();
                    b.recv_into(&mut d, &mut f).await.unwrap();
                }
            };
            tokio::join!(send, recv);
        } else {
            let send = async {
                for _ in 0..n {
                    a.send(&payload, &[]).await.unwrap();
                }
            };
            let recv = async {
                for _ in 0..n {
                    drop(b.recv().await.unwrap());
                }
            };
            tokio::join!(send, recv);
        }
        eprintln!(
            "{mode} {size}: {:.0} ns/msg",
            t.elapsed().as_nanos() as f64 / n as f64
        );
    });
}
