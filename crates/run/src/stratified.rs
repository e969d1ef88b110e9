//! The one class-stratified sampler: which images a run trains on (`--train-limit`) and which
//! rows a t-SNE embeds both keep every class's share. It lives here, below training and
//! analysis, so that both use the same apportionment.
//!
//! Class `c` with `n_c` of the `n` labels gets `⌊m · n_c / n⌋` of the `m` picks, and the picks
//! left over go one each to the classes with the largest remainders (ties: the smaller label),
//! in exact integer arithmetic, so the total is exactly `m`. Within a class, [`Within`] says
//! which rows are taken. Deterministic; the result is sorted.

/// Which rows of a class a stratified sample takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Within {
    /// The class's first rows in input order (a training subset: the same images whatever
    /// the size asked for, plus more as it grows).
    First,
    /// Rows evenly spaced over the class in input order, `j ↦ ⌊(2j + 1) n_c / (2 q_c)⌋`, so
    /// that an ordering of the input (say, by time) is covered evenly (a t-SNE subsample).
    Spread,
}

/// At most `m` row indices keeping every class's share; all rows when there are at most `m`.
/// Every label value (`-1` included) is a class.
pub fn stratified(labels: &[i64], m: usize, within: Within) -> Vec<usize> {
    let n = labels.len();
    if n <= m {
        return (0..n).collect();
    }
    let mut classes: Vec<(i64, Vec<usize>)> = Vec::new();
    let mut order: Vec<usize> = (0..n).collect();
    // Stable sort: rows of a class stay in input order.
    order.sort_by_key(|&i| labels[i]);
    for i in order {
        match classes.last_mut() {
            Some((label, rows)) if *label == labels[i] => rows.push(i),
            _ => classes.push((labels[i], vec![i])),
        }
    }
    let quota = apportion(&classes, n, m);
    let mut picked: Vec<usize> = (classes.iter().zip(&quota))
        .flat_map(|((_, rows), &q)| {
            let c = rows.len();
            (0..q).map(move |j| match within {
                Within::First => rows[j],
                Within::Spread => rows[(2 * j + 1) * c / (2 * q)],
            })
        })
        .collect();
    picked.sort_unstable();
    picked
}

/// Largest-remainder quotas of `m` picks over `classes` (ascending labels) of `n` rows
/// (u128: no overflow).
fn apportion(classes: &[(i64, Vec<usize>)], n: usize, m: usize) -> Vec<usize> {
    let (total, budget) = (n as u128, m as u128);
    let mut quota = Vec::with_capacity(classes.len());
    let mut remainder = Vec::with_capacity(classes.len());
    for (k, (_, rows)) in classes.iter().enumerate() {
        let share = budget * rows.len() as u128;
        quota.push((share / total) as usize);
        remainder.push((share % total, k));
    }
    let left = m - quota.iter().sum::<usize>();
    // Classes are in ascending label order, so a stable sort on the remainder breaks ties
    // towards the smaller label.
    remainder.sort_by_key(|&(r, _)| std::cmp::Reverse(r));
    for &(_, k) in remainder.iter().take(left) {
        quota[k] += 1;
    }
    quota
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_rows_by_hand() {
        // Counts 0:1, 5:2, 11:3 of 6; shares of 3 are 0.5, 1, 1.5: floors 0, 1, 1, and the one
        // left goes to the largest remainder, a tie between 0 and 11 that the lower label wins.
        let labels = [11, 0, 11, 5, 11, 5];
        assert_eq!(stratified(&labels, 3, Within::First), vec![0, 1, 3]);
    }

    #[test]
    fn spread_rows_by_hand() {
        // One class of 8 rows, 2 picks: rows ⌊1·8/4⌋ = 2 and ⌊3·8/4⌋ = 6.
        assert_eq!(stratified(&[4; 8], 2, Within::Spread), vec![2, 6]);
        assert_eq!(stratified(&[4; 8], 2, Within::First), vec![0, 1]);
    }
}
